// AKS for deploy/kubernetes/overlays/aks: the cluster, and federated credentials that let its API
// and migration pods sign in as the user-assigned identities main.bicep creates for Entra sign-in
// to Postgres (databaseBackend 'postgres', postgresAuth 'managedIdentity'). An entry template of
// its own, deployed beside main.bicep's resources and never by CD:
//
//   az deployment group create --resource-group RG --template-file deploy/azure/aks.bicep
//
// Its outputs fill deploy/kubernetes/overlays/aks/azure.env (docs/kubernetes.md).

@description('Azure region.')
param location string = resourceGroup().location

@description('The prefix main.bicep named the identities with (<prefix>-api-identity, <prefix>-migrate-identity).')
param namePrefix string = 'items'

@description('Name of the AKS cluster.')
param clusterName string = '${namePrefix}-aks'

@description('Nodes of the cluster: two, so the API and web replicas spread over nodes.')
@minValue(1)
param nodeCount int = 2

@description('VM size of the nodes.')
param nodeVmSize string = 'Standard_D2ds_v5'

@description('Kubernetes namespace of the app (deploy/kubernetes uses items).')
param namespace string = 'items'

@description('Tags for the cluster.')
param tags object = {}

module cluster 'modules/aks-cluster.bicep' = {
  name: 'aks-cluster'
  params: {
    location: location
    name: clusterName
    nodeCount: nodeCount
    nodeVmSize: nodeVmSize
    tags: tags
  }
}

// The service accounts of deploy/kubernetes: `api` for the replicas, `items-migrate` for the Job.
module apiCredential 'modules/federated-credential.bicep' = {
  name: 'aks-api-credential'
  params: {
    identityName: '${namePrefix}-api-identity'
    issuer: cluster.outputs.oidcIssuerUrl
    namespace: namespace
    serviceAccount: 'api'
  }
}

// Entra serializes writes to one identity's credentials; the two identities differ, so the
// modules run side by side.
module migrateCredential 'modules/federated-credential.bicep' = {
  name: 'aks-migrate-credential'
  params: {
    identityName: '${namePrefix}-migrate-identity'
    issuer: cluster.outputs.oidcIssuerUrl
    namespace: namespace
    serviceAccount: 'items-migrate'
  }
}

@description('azure.env API_CLIENT_ID.')
output apiClientId string = apiCredential.outputs.clientId

@description('azure.env API_PRINCIPAL_ID.')
output apiPrincipalId string = apiCredential.outputs.principalId

@description('azure.env MIGRATE_CLIENT_ID.')
output migrateClientId string = migrateCredential.outputs.clientId

@description('The cluster\'s name, for az aks get-credentials.')
output clusterName string = clusterName
