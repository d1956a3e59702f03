// The API container app: internal ingress on 8000, probes, scale, and the settings of its
// database backend.
//   sqlite:   one replica, one active revision, the Azure Files share on /data.
//   postgres: minReplicas..maxReplicas on the flexible server, signed in with its own identity
//             (or the app login's password); it does not migrate at start, the migration job does.

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

@description('Where the items live.')
@allowed([
  'sqlite'
  'postgres'
])
param databaseBackend string

@description('SQLite: the environment storage (Azure Files share) to mount on /data.')
param sqliteStorageName string = ''

@description('Postgres: host name of the server.')
param postgresHost string = ''

@description('Postgres: database name.')
param postgresDatabase string = ''

@description('Postgres: the role the API signs in as (its identity name, or the app login).')
param postgresUser string = ''

@description('Postgres: connections each replica opens at most (DATABASE_POOL_SIZE).')
@minValue(1)
param poolSize int = 1

@description('Postgres: how the API signs in.')
@allowed([
  'managedIdentity'
  'password'
])
param postgresAuth string = 'managedIdentity'

@description('Postgres with Entra sign-in: resource ID of the API identity.')
param entraIdentityId string = ''

@description('Postgres with Entra sign-in: client ID of the API identity.')
param entraClientId string = ''

@description('Postgres with password sign-in: the app login\'s password, mounted as a file.')
@secure()
param postgresPassword string = ''

@description('Postgres: fewest replicas.')
@minValue(1)
param minReplicas int = 1

@description('Postgres: most replicas.')
@minValue(1)
param maxReplicas int = 1

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

var onSqlite = databaseBackend == 'sqlite'
var passwordSignIn = (!onSqlite) && (postgresAuth == 'password')
var entraSignIn = (!onSqlite) && (postgresAuth == 'managedIdentity')

// The API runs as distroless nonroot (65532). SMB has no POSIX owners, so the mount presents every
// file as theirs; nobrl keeps SQLite's byte-range locks local instead of sending them to the SMB
// server, which rejects them ("database is locked").
var dataMountOptions = 'nobrl,uid=65532,gid=65532,dir_mode=0770,file_mode=0660'

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

// TLS verified against the roots compiled into the binary, which Azure's certificates chain to.
var postgresEnv = concat([
  {
    name: 'DATABASE_URL'
    value: 'postgres://${postgresUser}@${postgresHost}:5432/${postgresDatabase}?sslmode=verify-full'
  }
  {
    name: 'DATABASE_POOL_SIZE'
    value: string(poolSize)
  }
  {
    // The migration job migrates before each deploy; a replica that finds an older schema waits
    // for it (answering 503) instead of migrating itself.
    name: 'MIGRATE_ON_START'
    value: 'false'
  }
], passwordSignIn ? [
  {
    // The secret as a file (the secrets volume below), not as an environment variable.
    name: 'DATABASE_PASSWORD_FILE'
    value: '/run/secrets/db-password'
  }
] : [
  {
    name: 'DATABASE_AUTH'
    value: 'azure-managed-identity'
  }
  {
    // Which of the app's identities to ask the identity endpoint for.
    name: 'AZURE_CLIENT_ID'
    value: entraClientId
  }
])

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

var appSecrets = concat(pullWithPassword ? [
  {
    name: 'registry-password'
    value: registryPassword
  }
] : [], passwordSignIn ? [
  {
    name: 'db-password'
    value: postgresPassword
  }
] : [])

var identities = union(entraSignIn ? {
  '${entraIdentityId}': {}
} : {}, pullWithIdentity ? {
  '${registryIdentityId}': {}
} : {})

var volumes = onSqlite ? [
  {
    name: 'data'
    storageType: 'AzureFile'
    storageName: sqliteStorageName
    mountOptions: dataMountOptions
  }
] : (passwordSignIn ? [
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
] : [])

var volumeMounts = onSqlite ? [
  {
    volumeName: 'data'
    mountPath: '/data'
  }
] : (passwordSignIn ? [
  {
    volumeName: 'secrets'
    mountPath: '/run/secrets'
  }
] : [])

resource api 'Microsoft.App/containerApps@2026-01-01' = {
  name: name
  location: location
  tags: tags
  identity: empty(identities) ? {
    type: 'None'
  } : {
    type: 'UserAssigned'
    userAssignedIdentities: identities
  }
  properties: {
    environmentId: environmentId
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
      secrets: appSecrets
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'api'
          image: image
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
              // Opening the database over SMB happens before this passes.
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
              // Liveness, not /api/health: with the database down every replica would leave
              // rotation and the ingress would answer its own non-JSON 503. This way each
              // replica keeps answering, with the API's JSON 503 and Retry-After.
              type: 'Readiness'
              httpGet: {
                path: '/api/healthz'
                port: 8000
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 3
            }
          ]
          volumeMounts: volumeMounts
        }
      ]
      // SQLite: exactly one replica. More would each write the same file over SMB without shared
      // locks. On Postgres, replicas share the database and scale on concurrent requests.
      scale: onSqlite ? {
        minReplicas: 1
        maxReplicas: 1
      } : {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
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
      volumes: volumes
    }
  }
}

@description('Internal FQDN of the API (reachable only inside the environment).')
output fqdn string = api.properties.configuration.ingress.fqdn

@description('Name of the app.')
output name string = api.name
