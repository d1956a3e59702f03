// The migration job (Postgres only): `items-api migrate` from the API image, started by hand or by
// a deploy (the workflow, or azd's predeploy hook) before the API gets a new image. It signs in as
// an administrator, migrates, then gives the API's role exactly the rights it serves with.
//   Entra sign-in: as the migration identity; it creates the API identity's role when missing.
//   Password sign-in: as the admin login; it creates or updates the app login with its password.

@description('Azure region.')
param location string

@description('Name of the job.')
param name string

@description('Resource ID of the Container Apps environment.')
param environmentId string

@description('The API image, registry/repository:tag or @digest (the binary has the migrate command).')
param image string

@description('Tags for the job.')
param tags object

@description('Host name of the Postgres server.')
param postgresHost string

@description('Database name.')
param postgresDatabase string

@description('The administrator the job signs in as: the migration identity\'s name, or the admin login.')
param adminUser string

@description('How the job signs in.')
@allowed([
  'managedIdentity'
  'password'
])
param postgresAuth string

@description('Entra sign-in: resource ID of the migration identity.')
param entraIdentityId string = ''

@description('Entra sign-in: client ID of the migration identity.')
param entraClientId string = ''

@description('Password sign-in: the admin login\'s password.')
@secure()
param adminPassword string = ''

@description('The role the API signs in as, which the job grants the serving rights.')
param appRole string

@description('Entra sign-in: object ID of the API identity, to create its role when missing.')
param appRoleObjectId string = ''

@description('Password sign-in: the app login\'s password, which the job sets.')
@secure()
param appRolePassword string = ''

@description('Seconds one attempt may run before it is stopped.')
@minValue(60)
param replicaTimeoutSeconds int = 600

@description('Attempts after a failed one (migrations take an advisory lock and are idempotent).')
@minValue(0)
@maxValue(3)
param replicaRetryLimit int = 1

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

var passwordSignIn = postgresAuth == 'password'

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

var jobSecrets = concat(pullWithPassword ? [
  {
    name: 'registry-password'
    value: registryPassword
  }
] : [], passwordSignIn ? [
  {
    name: 'db-admin-password'
    value: adminPassword
  }
  {
    name: 'db-app-password'
    value: appRolePassword
  }
] : [])

var identities = union(passwordSignIn ? {} : {
  '${entraIdentityId}': {}
}, pullWithIdentity ? {
  '${registryIdentityId}': {}
} : {})

var signInEnv = passwordSignIn ? [
  {
    // Passwords as files (the secrets volume below), not as environment variables.
    name: 'DATABASE_PASSWORD_FILE'
    value: '/run/secrets/db-admin-password'
  }
  {
    name: 'MIGRATE_APP_ROLE_PASSWORD_FILE'
    value: '/run/secrets/db-app-password'
  }
] : [
  {
    name: 'DATABASE_AUTH'
    value: 'azure-managed-identity'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: entraClientId
  }
  {
    name: 'MIGRATE_APP_ROLE_ENTRA_OBJECT_ID'
    value: appRoleObjectId
  }
]

resource job 'Microsoft.App/jobs@2026-01-01' = {
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
      triggerType: 'Manual'
      manualTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
      }
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: replicaRetryLimit
      secrets: jobSecrets
      registries: registries
    }
    template: {
      containers: [
        {
          name: 'migrate'
          image: image
          args: [
            'migrate'
          ]
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
            {
              name: 'DATABASE_URL'
              value: 'postgres://${adminUser}@${postgresHost}:5432/${postgresDatabase}?sslmode=verify-full'
            }
            {
              // One connection: what the connection budget counts for the job.
              name: 'DATABASE_POOL_SIZE'
              value: '1'
            }
            {
              name: 'MIGRATE_APP_ROLE'
              value: appRole
            }
          ], signInEnv)
          volumeMounts: passwordSignIn ? [
            {
              volumeName: 'secrets'
              mountPath: '/run/secrets'
            }
          ] : []
        }
      ]
      volumes: passwordSignIn ? [
        {
          name: 'secrets'
          storageType: 'Secret'
          secrets: [
            {
              secretRef: 'db-admin-password'
              path: 'db-admin-password'
            }
            {
              secretRef: 'db-app-password'
              path: 'db-app-password'
            }
          ]
        }
      ] : []
    }
  }
}

@description('Name of the job.')
output name string = job.name
