// Log Analytics: where the Container Apps environment sends the console and system logs of every
// app and job.

@description('Azure region.')
param location string

@description('Name of the workspace.')
param name string

@description('Days the workspace keeps logs (30 are included in the price).')
@minValue(30)
param retentionDays int

@description('Tags for the workspace.')
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

// The environment reads the shared key itself (an existing reference), so no output carries it.
@description('Name of the workspace.')
output name string = workspace.name
