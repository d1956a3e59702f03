// A federated credential on a user-assigned identity: Entra ID trusts the tokens a cluster's OIDC
// issuer signs for one service account, so a pod running as that account signs in as the
// identity (AKS workload identity).

@description('Name of the user-assigned identity, in this resource group.')
param identityName string

@description('The cluster\'s OIDC issuer URL.')
param issuer string

@description('Namespace of the service account.')
param namespace string

@description('Name of the service account.')
param serviceAccount string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' existing = {
  name: identityName
}

resource credential 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials@2024-11-30' = {
  parent: identity
  name: 'aks-${namespace}-${serviceAccount}'
  properties: {
    issuer: issuer
    subject: 'system:serviceaccount:${namespace}:${serviceAccount}'
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

@description('Client ID, for the service account annotation azure.workload.identity/client-id.')
output clientId string = identity.properties.clientId

@description('Principal (object) ID, which the database role is created for.')
output principalId string = identity.properties.principalId
