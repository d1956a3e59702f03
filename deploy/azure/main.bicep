// Items app on Azure Container Apps: provisioning only. Deployed by hand (deploy/azure/README.md)
// for the first time and whenever this file changes; the CD workflow then only swaps images with
// `az containerapp update --image`, so a deployment never re-creates the apps or the share.
//
//   Log Analytics <- Container Apps environment (Consumption)
//   internet --https--> web (external ingress, :8080) --https--> api (internal ingress, :8000)
//   databaseBackend 'sqlite':   api: one replica, Azure Files share mounted on /data
//   databaseBackend 'postgres': api: minReplicas..maxReplicas on Azure Database for PostgreSQL
//                               Flexible Server (TLS, Entra ID sign-in with a managed identity)

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

@description('Where the API keeps the items: one replica on SQLite in an Azure Files share, or several replicas on Azure Database for PostgreSQL.')
@allowed([
  'sqlite'
  'postgres'
])
param databaseBackend string = 'sqlite'

@description('Postgres: fewest API replicas (two or more, so one can restart while the other serves).')
@minValue(2)
param apiMinReplicas int = 2

@description('Postgres: most API replicas. Replicas x (apiPoolSize + 1 listener) must stay below the server\'s usable connections (deploy/azure/README.md).')
@minValue(2)
param apiMaxReplicas int = 5

@description('Postgres: connections each API replica opens at most (DATABASE_POOL_SIZE).')
@minValue(1)
param apiPoolSize int = 5

@description('Postgres: how the API signs in. managedIdentity: passwordless, with an Entra ID token of a user-assigned identity (recommended). password: a password kept as a Container Apps secret.')
@allowed([
  'managedIdentity'
  'password'
])
param postgresAuth string = 'managedIdentity'

@description('Postgres with postgresAuth = password: the administrator login the API signs in as.')
param postgresAdminLogin string = 'itemsadmin'

@description('Postgres with postgresAuth = password: its password. Never in a parameters file; pass it on the command line or from a key vault.')
@secure()
param postgresAdminPassword string = ''

@description('Postgres: compute size. Burstable B1ms has 50 connections, 15 of them reserved for Azure.')
param postgresSkuName string = 'Standard_B1ms'

@description('Postgres: the tier that goes with postgresSkuName (Burstable, GeneralPurpose, MemoryOptimized).')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param postgresSkuTier string = 'Burstable'

@description('Postgres: major version.')
param postgresVersion string = '17'

@description('Postgres: storage in GiB.')
@minValue(32)
param postgresStorageGiB int = 32

@description('Postgres: days of automated backups (point-in-time restore), 7 to 35.')
@minValue(7)
@maxValue(35)
param postgresBackupRetentionDays int = 7

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
var onSqlite = databaseBackend == 'sqlite'
var onPostgres = databaseBackend == 'postgres'
var postgresServerName = take('${toLower(namePrefix)}-pg-${uniqueString(resourceGroup().id)}', 63)
var postgresDatabaseName = 'items'
var apiIdentityName = '${namePrefix}-api-identity'

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

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = if (onSqlite) {
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

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2025-01-01' = if (onSqlite) {
  parent: storage
  name: 'default'
  properties: {
    shareDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2025-01-01' = if (onSqlite) {
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

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2025-01-01' = if (onSqlite) {
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

// The API's identity for signing in to Postgres without a password: it is the server's Entra ID
// administrator, so it can create the tables on the first start (deploy/azure/README.md has the
// least-privilege variant).
resource apiIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = if (onPostgres && postgresAuth == 'managedIdentity') {
  name: apiIdentityName
  location: location
}

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = if (onPostgres) {
  name: postgresServerName
  location: location
  sku: {
    name: postgresSkuName
    tier: postgresSkuTier
  }
  properties: {
    version: postgresVersion
    storage: {
      storageSizeGB: postgresStorageGiB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: postgresBackupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    authConfig: {
      activeDirectoryAuth: (postgresAuth == 'managedIdentity') ? 'Enabled' : 'Disabled'
      passwordAuth: (postgresAuth == 'password') ? 'Enabled' : 'Disabled'
      tenantId: subscription().tenantId
    }
    administratorLogin: (postgresAuth == 'password') ? postgresAdminLogin : null
    administratorLoginPassword: (postgresAuth == 'password') ? postgresAdminPassword : null
    // Public endpoint, reachable from Azure services only (the firewall rule below); the
    // README shows the private (VNet) variant.
    network: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

// 0.0.0.0 to 0.0.0.0 is Azure's "allow Azure services": any Azure address, no internet ones.
resource postgresFirewall 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (onPostgres) {
  parent: postgres
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

// Refuse every connection without TLS (the default; set so that it stays so).
resource postgresTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = if (onPostgres) {
  parent: postgres
  name: 'require_secure_transport'
  properties: {
    value: 'on'
    source: 'user-override'
  }
}

resource postgresDatabase 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = if (onPostgres) {
  parent: postgres
  name: postgresDatabaseName
  dependsOn: [
    postgresTls
  ]
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

resource postgresAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (onPostgres && postgresAuth == 'managedIdentity') {
  parent: postgres
  name: apiIdentity!.properties.principalId
  dependsOn: [
    postgresDatabase
  ]
  properties: {
    principalName: apiIdentity.name
    principalType: 'ServicePrincipal'
    tenantId: subscription().tenantId
  }
}

// Postgres URL: the identity's name (or the admin login) as user, TLS verified against the
// compiled-in roots, which include the ones Azure's certificates chain to.
var postgresUser = (postgresAuth == 'managedIdentity') ? apiIdentityName : postgresAdminLogin
var postgresUrl = onPostgres ? 'postgres://${postgresUser}@${postgres!.properties.fullyQualifiedDomainName}:5432/${postgresDatabaseName}?sslmode=verify-full' : ''

var databaseSecrets = (onPostgres && postgresAuth == 'password') ? [
  {
    name: 'db-password'
    value: postgresAdminPassword
  }
] : []

var sqliteEnv = [
  {
    name: 'DB_PATH'
    value: '/data/app.db'
  }
  {
    // WAL needs shared memory between processes, which SMB cannot provide.
    name: 'SQLITE_JOURNAL_MODE'
    value: 'delete'
  }
]

var postgresEnv = concat([
  {
    name: 'DATABASE_URL'
    value: postgresUrl
  }
  {
    name: 'DATABASE_POOL_SIZE'
    value: string(apiPoolSize)
  }
], (postgresAuth == 'managedIdentity') ? [
  {
    name: 'DATABASE_AUTH'
    value: 'azure-managed-identity'
  }
  {
    // Which identity to ask the identity endpoint for (a user-assigned one).
    name: 'AZURE_CLIENT_ID'
    value: apiIdentity!.properties.clientId
  }
] : [
  {
    // The secret as a file (the secrets volume below), not as an environment variable.
    name: 'DATABASE_PASSWORD_FILE'
    value: '/run/secrets/db-password'
  }
])

var sqliteVolumes = [
  {
    name: 'data'
    storageType: 'AzureFile'
    storageName: environmentStorageName
    mountOptions: dataMountOptions
  }
]

var postgresVolumes = (postgresAuth == 'password') ? [
  {
    name: 'secrets'
    storageType: 'Secret'
    secrets: [
      {
        secretRef: 'db-password'
        path: 'db-password'
      }
    ]
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
// file over SMB without shared locks. On Postgres, replicas share the database: minReplicas to
// maxReplicas, scaled on concurrent requests, and old and new revisions may overlap.
resource api 'Microsoft.App/containerApps@2025-01-01' = {
  name: apiAppName
  location: location
  // Only the one of the two that is deployed stays a dependency.
  dependsOn: [
    environmentStorage
    postgresAdmin
    postgresDatabase
  ]
  identity: (onPostgres && postgresAuth == 'managedIdentity') ? {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${apiIdentity.id}': {}
    }
  } : {
    type: 'None'
  }
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
      secrets: concat(registrySecrets, databaseSecrets)
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
          env: concat([
            {
              name: 'APP_ENV'
              value: 'production'
            }
            {
              name: 'RUST_LOG'
              value: 'info'
            }
          ], onSqlite ? sqliteEnv : postgresEnv)
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
          volumeMounts: onSqlite ? [
            {
              volumeName: 'data'
              mountPath: '/data'
            }
          ] : ((postgresAuth == 'password') ? [
            {
              volumeName: 'secrets'
              mountPath: '/run/secrets'
            }
          ] : [])
        }
      ]
      scale: onSqlite ? {
        minReplicas: 1
        maxReplicas: 1
      } : {
        minReplicas: apiMinReplicas
        maxReplicas: apiMaxReplicas
        rules: [
          {
            name: 'http'
            http: {
              metadata: {
                concurrentRequests: '100'
              }
            }
          }
        ]
      }
      volumes: onSqlite ? sqliteVolumes : postgresVolumes
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

@description('SQLite: the storage account holding the share with the database (backups: README).')
output storageAccountName string = onSqlite ? storage.name : ''

@description('SQLite: the Azure Files share with the database.')
output shareName string = onSqlite ? share.name : ''

@description('Postgres: the server\'s host name.')
output postgresServerFqdn string = onPostgres ? postgres!.properties.fullyQualifiedDomainName : ''

@description('Postgres: the user the API signs in as (the managed identity\'s name, or the admin login).')
output postgresUser string = onPostgres ? postgresUser : ''
