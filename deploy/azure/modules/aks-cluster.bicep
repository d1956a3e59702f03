// An AKS cluster for deploy/kubernetes: the OIDC issuer and the workload identity webhook on, so
// pods sign in to Entra ID with their service account tokens, and Azure CNI with Cilium, which
// enforces the NetworkPolicies.

@description('Azure region.')
param location string

@description('Name of the cluster; also its DNS prefix.')
param name string

@description('Nodes of the system pool, which runs the app too.')
@minValue(1)
param nodeCount int

@description('VM size of the nodes.')
param nodeVmSize string

@description('Tags for the cluster.')
param tags object

resource cluster 'Microsoft.ContainerService/managedClusters@2025-05-01' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    dnsPrefix: name
    agentPoolProfiles: [
      {
        name: 'system'
        mode: 'System'
        count: nodeCount
        vmSize: nodeVmSize
        osType: 'Linux'
        osSKU: 'AzureLinux'
      }
    ]
    networkProfile: {
      networkPlugin: 'azure'
      networkPluginMode: 'overlay'
      networkDataplane: 'cilium'
      networkPolicy: 'cilium'
    }
    oidcIssuerProfile: {
      enabled: true
    }
    securityProfile: {
      workloadIdentity: {
        enabled: true
      }
    }
  }
}

@description('The issuer of the service account tokens, which federated credentials trust.')
output oidcIssuerUrl string = cluster.properties.oidcIssuerProfile.issuerURL
