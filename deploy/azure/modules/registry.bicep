// Azure Container Registry for the azd path: azd builds both images and pushes them here (it
// reads the login server from the AZURE_CONTAINER_REGISTRY_ENDPOINT output), and the apps pull
// them with a user-assigned identity that has AcrPull, so no registry password exists.

@description('Azure region.')
param location string

@description('Registry name: 5-50 letters and digits, globally unique.')
@minLength(5)
@maxLength(50)
param name string

@description('Principal ID of the identity the apps pull with. A parameter, so the role assignment name is known when the deployment starts.')
param pullPrincipalId string

@description('Tags for the registry.')
param tags object

// Built-in role AcrPull.
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource registry 'Microsoft.ContainerRegistry/registries@2025-11-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Basic'
  }
  properties: {
    // Entra sign-in only: pushes with the deployer's token, pulls with the identity.
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource pullRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: registry
  name: guid(registry.id, pullPrincipalId, acrPullRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: pullPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The role assignment is part of this module, so an app that takes this output waits for it.
@description('Login server, e.g. <name>.azurecr.io.')
output loginServer string = registry.properties.loginServer
