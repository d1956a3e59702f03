// Log Analytics: where the Container Apps environment sends the console and system logs of every
// app and job; and Application Insights on the same workspace, where the environment's
// OpenTelemetry agent sends the API's traces and OpenTelemetry logs, so one query reaches both.

@description('Azure region.')
param location string

@description('Name of the workspace.')
param name string

@description('Name of the Application Insights component.')
param appInsightsName string

@description('Days the workspace keeps logs (30 are included in the price).')
@minValue(30)
param retentionDays int

@description('Tags for the workspace and the component.')
param tags object

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
  }
}

// Workspace-based: its tables (AppRequests, AppDependencies, AppTraces) live in the workspace
// above and keep its retention.
resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
  }
}

// The environment reads the shared key and the connection string itself (existing references),
// so no output carries them.
@description('Name of the workspace.')
output name string = workspace.name

@description('Name of the Application Insights component.')
output appInsightsName string = appInsights.name
