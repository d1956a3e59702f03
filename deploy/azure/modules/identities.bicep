// The user-assigned identities. With Entra sign-in to Postgres there are two, so the app gets
// least privilege: the API identity serves (a plain database role that the migration job grants
// the serving rights) and the migration identity runs the migrations (an Entra administrator of
// the server). With the registry there is a third, which both apps and the job pull images with. User-assigned identities exist before the apps,
// so the very first revision can already sign in and pull.

@description('Azure region.')
param location string

@description('Name of the API identity.')
param apiIdentityName string

@description('Name of the migration identity.')
param migrateIdentityName string

@description('Name of the identity that pulls images.')
param pullIdentityName string

@description('Create the API and migration identities (Postgres with Entra sign-in).')
param postgresEntraSignIn bool

@description('Create the identity that pulls images from the Azure Container Registry.')
param registryPull bool

@description('Tags for the identities.')
param tags object

resource apiIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (postgresEntraSignIn) {
  name: apiIdentityName
  location: location
  tags: tags
}

resource migrateIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (postgresEntraSignIn) {
  name: migrateIdentityName
  location: location
  tags: tags
}

resource pullIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (registryPull) {
  name: pullIdentityName
  location: location
  tags: tags
}

@description('API identity: resource ID (empty without Entra sign-in).')
output apiIdentityId string = postgresEntraSignIn ? apiIdentity!.id : ''

@description('API identity: client ID, for AZURE_CLIENT_ID.')
output apiIdentityClientId string = postgresEntraSignIn ? apiIdentity!.properties.clientId : ''

@description('API identity: principal (object) ID, which its database role is created for.')
output apiIdentityPrincipalId string = postgresEntraSignIn ? apiIdentity!.properties.principalId : ''

@description('Migration identity: resource ID (empty without Entra sign-in).')
output migrateIdentityId string = postgresEntraSignIn ? migrateIdentity!.id : ''

@description('Migration identity: client ID, for AZURE_CLIENT_ID.')
output migrateIdentityClientId string = postgresEntraSignIn ? migrateIdentity!.properties.clientId : ''

@description('Migration identity: principal (object) ID, the name of its administrator entry.')
output migrateIdentityPrincipalId string = postgresEntraSignIn ? migrateIdentity!.properties.principalId : ''

@description('Pull identity: resource ID (empty without the registry).')
output pullIdentityId string = registryPull ? pullIdentity!.id : ''

@description('Pull identity: principal (object) ID, which gets AcrPull.')
output pullIdentityPrincipalId string = registryPull ? pullIdentity!.properties.principalId : ''
