// The web container app: Nginx with the page, public on 8080 (HTTP redirected to HTTPS), proxying
// /api/ to the API's internal ingress.

@description('Azure region.')
param location string

@description('Name of the container app. The CD workflow updates it by this name.')
param name string

@description('Resource ID of the Container Apps environment.')
param environmentId string

@description('Image to run, registry/repository:tag or @digest.')
param image string

@description('Tags for the app (azd finds it by azd-service-name).')
param tags object

@description('Internal FQDN of the API app.')
param apiFqdn string

@description('How to pull: none (public images), identity (ACR, user-assigned identity) or password (GHCR token).')
@allowed([
  'none'
  'identity'
  'password'
])
param registryAuth string = 'none'

@description('Registry host to pull from.')
param registryServer string = ''

@description('Pull with this user-assigned identity (ACR).')
param registryIdentityId string = ''

@description('Or pull with this user name and password (GHCR token).')
param registryUsername string = ''

@description('The registry password.')
@secure()
param registryPassword string = ''

var pullWithIdentity = registryAuth == 'identity'
var pullWithPassword = registryAuth == 'password'

var registries = pullWithIdentity ? [
  {
    server: registryServer
    identity: registryIdentityId
  }
] : (pullWithPassword ? [
  {
    server: registryServer
    username: registryUsername
    passwordSecretRef: 'registry-password'
  }
] : [])

resource web 'Microsoft.App/containerApps@2026-01-01' = {
  name: name
  location: location
  tags: tags
  identity: pullWithIdentity ? {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${registryIdentityId}': {}
    }
  } : {
    type: 'None'
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 8080
        transport: 'auto'
        // Plain HTTP is redirected to HTTPS.
        allowInsecure: false
      }
      secrets: pullWithPassword ? [
        {
          name: 'registry-password'
          value: registryPassword
        }
      ] : []
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'web'
          image: image
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          env: [
            {
              // The API's internal FQDN over HTTPS, not http://<app>:8000: internal ingress
              // listens on 80/443 only. Nginx resolves the name per request through its own
              // resolver, which ignores resolv.conf search domains, so the bare app name would not
              // resolve; the FQDN does. The template sends SNI and keeps Host = the FQDN.
              name: 'API_UPSTREAM'
              value: 'https://${apiFqdn}'
            }
            {
              // Every connection comes from the environment's ingress, which appends the
              // client's address to X-Forwarded-For: the write limit counts per client only when
              // that last entry is trusted. The container is reachable through the ingress alone.
              name: 'REAL_IP_FROM'
              value: '0.0.0.0/0'
            }
          ]
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 2
              failureThreshold: 10
              timeoutSeconds: 2
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 2
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/healthz'
                port: 8080
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 2
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 3
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '50'
              }
            }
          }
        ]
      }
    }
  }
}

@description('Public host name of the app.')
output fqdn string = web.properties.configuration.ingress.fqdn

@description('Name of the app.')
output name string = web.name
