// The Container Apps environment (Consumption workload profile) that hosts both apps and the
// migration job, sending their logs to Log Analytics, and the OpenTelemetry traces and logs the
// API exports to Application Insights through the environment's managed OpenTelemetry agent.

@description('Azure region.')
param location string

@description('Name of the environment.')
param name string

@description('Name of the Log Analytics workspace (same resource group) that receives the logs.')
param logAnalyticsWorkspaceName string

@description('Name of the Application Insights component (same resource group) that receives the OpenTelemetry signals.')
param appInsightsName string

@description('Tags for the environment.')
param tags object

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' existing = {
  name: logAnalyticsWorkspaceName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

// A preview version on purpose: appInsightsConfiguration and openTelemetryConfiguration (the
// managed OpenTelemetry agent) exist only in the preview versions, up to 2025-10-02-preview; the
// GA 2026-01-01 the apps use does not have them. The agent takes OTLP over gRPC only, and gives
// every app its address (OTEL_EXPORTER_OTLP_ENDPOINT with OTEL_EXPORTER_OTLP_PROTOCOL=grpc, and
// CONTAINERAPP_OTEL_{TRACING,LOGGING}_GRPC_ENDPOINT per signal). Application Insights takes traces
// and logs from it, not metrics.
#disable-next-line use-recent-api-versions
resource environment 'Microsoft.App/managedEnvironments@2025-10-02-preview' = {
  name: name
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    appInsightsConfiguration: {
      connectionString: appInsights.properties.ConnectionString
    }
    openTelemetryConfiguration: {
      tracesConfiguration: {
        destinations: [
          'appInsights'
        ]
      }
      logsConfiguration: {
        destinations: [
          'appInsights'
        ]
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

@description('Resource ID of the environment.')
output id string = environment.id

@description('Name of the environment.')
output name string = environment.name
