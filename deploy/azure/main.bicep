// Items app on Azure Container Apps: provisioning only. Deployed by hand (deploy/azure/README.md)
// for the first time and whenever this file changes; the CD workflow then only swaps images with
// `az containerapp update --image`, so a deployment never re-creates the apps or the share.
//
//   Log Analytics <- Container Apps environment (Consumption) -- storage "data" --> Azure Files share
//   internet --https--> web (external ingress, :8080) --https--> api (internal ingress, :8000, /data)

targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Prefix of the environment, storage and Log Analytics names.')
@minLength(3)
@maxLength(12)
param namePrefix string = 'items'

@description('Name of the API container app (internal). The CD workflow updates it by this name.')
param apiAppName string = 'items-api'

@description('Name of the web container app (public). The CD workflow updates it by this name.')
param webAppName string = 'items-web'

@description('Image repository prefix, lowercase: ghcr.io/<owner>/<repo>. The images are <prefix>/api and <prefix>/web.')
param imageRepository string

@description('Tag of both images for this deployment, e.g. sha-<full commit sha>. CD changes it afterwards.')
param imageTag string

@description('GHCR user that owns the read:packages token. Empty when both packages are public.')
param ghcrUsername string = ''

@description('GitHub token (classic PAT) with read:packages only. Empty when both packages are public.')
@secure()
param ghcrPassword string = ''

@description('Size of the Azure Files share that holds the SQLite database, in GiB.')
@minValue(1)
param shareQuotaGiB int = 1

@description('Days Log Analytics keeps container logs.')
@minValue(30)
param logRetentionDays int = 30

// Storage account names: 3-24 lowercase letters and digits, globally unique.
var storageAccountName = take('${replace(toLower(namePrefix), '-', '')}${uniqueString(resourceGroup().id)}', 24)
var shareName = 'items-data'
var environmentStorageName = 'data'
var useRegistryCredentials = !empty(ghcrUsername) && !empty(ghcrPassword)

// The API runs as distroless nonroot (65532). SMB has no POSIX owners, so the mount presents
// every file as theirs; nobrl keeps SQLite's byte-range locks local instead of sending them to
// the SMB server, which rejects them ("database is locked").
var dataMountOptions = 'nobrl,uid=65532,gid=65532,dir_mode=0770,file_mode=0660'

resource logs 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: '${namePrefix}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // The Container Apps SMB mount authenticates with the account key.
    allowSharedKeyAccess: true
  }
}

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    shareDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2025-01-01' = {
  parent: fileService
  name: shareName
  properties: {
    shareQuota: shareQuotaGiB
    enabledProtocols: 'SMB'
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: '${namePrefix}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
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

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2025-01-01' = {
  parent: environment
  name: environmentStorageName
  properties: {
    azureFile: {
      accountName: storage.name
      accountKey: storage.listKeys().keys[0].value
      shareName: share.name
      accessMode: 'ReadWrite'
    }
  }
}

var registrySecrets = useRegistryCredentials ? [
  {
    name: 'ghcr-password'
    value: ghcrPassword
  }
] : []

var registries = useRegistryCredentials ? [
  {
    server: 'ghcr.io'
    username: ghcrUsername
    passwordSecretRef: 'ghcr-password'
  }
] : []

// SQLite: exactly one replica and one active revision. More replicas would each write the same
// file over SMB without shared locks. Moving to Postgres lifts this (deploy/azure/README.md).
resource api 'Microsoft.App/containerApps@2025-01-01' = {
  name: apiAppName
  location: location
  properties: {
    environmentId: environment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        // Reachable only from inside the environment (the web app), on 443 (and 80) of its
        // internal FQDN; Container Apps forwards to targetPort.
        external: false
        targetPort: 8000
        transport: 'http'
        allowInsecure: false
      }
      secrets: registrySecrets
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'api'
          image: '${imageRepository}/api:${imageTag}'
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          env: [
            {
              name: 'APP_ENV'
              value: 'production'
            }
            {
              name: 'DB_PATH'
              value: '/data/app.db'
            }
            {
              // WAL needs shared memory between processes, which SMB cannot provide.
              name: 'SQLITE_JOURNAL_MODE'
              value: 'delete'
            }
            {
              name: 'RUST_LOG'
              value: 'info'
            }
          ]
          probes: [
            {
              // Migrations and the first open of the database over SMB happen before this passes.
              type: 'Startup'
              httpGet: {
                path: '/api/healthz'
                port: 8000
              }
              initialDelaySeconds: 2
              periodSeconds: 3
              failureThreshold: 10
              timeoutSeconds: 2
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/api/healthz'
                port: 8000
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 2
            }
            {
              // 503 while the database is unreachable or read-only: no traffic until it is back.
              type: 'Readiness'
              httpGet: {
                path: '/api/health'
                port: 8000
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 3
            }
          ]
          volumeMounts: [
            {
              volumeName: 'data'
              mountPath: '/data'
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
      volumes: [
        {
          name: 'data'
          storageType: 'AzureFile'
          storageName: environmentStorage.name
          mountOptions: dataMountOptions
        }
      ]
    }
  }
}

resource web 'Microsoft.App/containerApps@2025-01-01' = {
  name: webAppName
  location: location
  properties: {
    environmentId: environment.id
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
      secrets: registrySecrets
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'web'
          image: '${imageRepository}/web:${imageTag}'
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
              value: 'https://${api.properties.configuration.ingress.fqdn}'
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

@description('Public URL of the app.')
output webUrl string = 'https://${web.properties.configuration.ingress.fqdn}'

@description('Internal FQDN of the API (reachable only inside the environment).')
output apiInternalFqdn string = api.properties.configuration.ingress.fqdn

@description('Storage account holding the share with the SQLite database (backups: README).')
output storageAccountName string = storage.name

@description('Name of the Azure Files share with the SQLite database.')
output shareName string = share.name
