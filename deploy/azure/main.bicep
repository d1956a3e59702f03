// Items app on Azure Container Apps: provisioning only. It orchestrates one module per concern
// (modules/); deploy/azure/README.md says how to run it, with azd or by hand. Afterwards the CD
// workflow only swaps images (`az containerapp update --image`, and runs the migration job first
// on Postgres), so a deploy never re-creates the apps, the share or the server.
//
//   Log Analytics <- Container Apps environment (Consumption) -> Application Insights (its managed
//                    OpenTelemetry agent: the API's traces and OpenTelemetry logs)
//   Azure Monitor metric alerts (5xx, restarts; on Postgres the server's connections, CPU,
//   storage) -> an action group that emails alertEmailAddress
//   internet --https--> web (external ingress, :8080) --https--> api (internal ingress, :8000)
//   databaseBackend 'sqlite':   api: one replica, Azure Files share mounted on /data
//   databaseBackend 'postgres': api: minReplicas..maxReplicas on Azure Database for PostgreSQL
//                               Flexible Server; a migration job migrates before each deploy
//   useContainerRegistry:       images from an Azure Container Registry (azd) instead of GHCR

targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Prefix of the environment, identity, storage, registry, server and Log Analytics names.')
@minLength(3)
@maxLength(12)
param namePrefix string = 'items'

@description('Name of the API container app (internal). The CD workflow updates it by this name.')
param apiAppName string = 'items-api'

@description('Name of the web container app (public). The CD workflow updates it by this name.')
param webAppName string = 'items-web'

@description('Postgres: name of the migration job. The CD workflow starts it by this name.')
param migrateJobName string = 'items-migrate'

@description('Image repository prefix, lowercase: ghcr.io/<owner>/<repo>. The images are <prefix>/api and <prefix>/web. Empty on the azd path, which sets apiImage and webImage.')
param imageRepository string = ''

@description('Tag of both images in imageRepository for this deployment, e.g. sha-<full commit sha>. CD changes it afterwards.')
param imageTag string = 'latest'

@description('Full image of the API (azd sets it). Empty: <imageRepository>/api:<imageTag>.')
param apiImage string = ''

@description('Full image of the web tier (azd sets it). Empty: <imageRepository>/web:<imageTag>.')
param webImage string = ''

@description('azd: the API app exists already. With no image given, it keeps the image it runs.')
param apiAppExists bool = false

@description('azd: the web app exists already. With no image given, it keeps the image it runs.')
param webAppExists bool = false

@description('GHCR user that owns the read:packages token. Empty when both packages are public.')
param ghcrUsername string = ''

@description('GitHub token (classic PAT) with read:packages only. Empty when both packages are public.')
@secure()
param ghcrPassword string = ''

@description('Create an Azure Container Registry and pull from it with a managed identity (the azd path; azd pushes the images there).')
param useContainerRegistry bool = false

@description('Where the API keeps the items: one replica on SQLite in an Azure Files share, or several replicas on Azure Database for PostgreSQL.')
@allowed([
  'sqlite'
  'postgres'
])
param databaseBackend string = 'sqlite'

@description('Postgres: fewest API replicas (two or more, so one can restart while the other serves).')
@minValue(2)
param apiMinReplicas int = 2

@description('Postgres: most API replicas. 3 so that a deploy, when old and new revisions both hold their connections, stays within what Standard_B1ms allows: (apiPoolSize + 1) x apiMaxReplicas x 2 + 1 + 3 <= 35 (deploy/azure/README.md).')
@minValue(2)
param apiMaxReplicas int = 3

@description('Postgres: connections each API replica opens at most (DATABASE_POOL_SIZE); each also holds one listener. 4, for the connection budget of apiMaxReplicas.')
@minValue(1)
param apiPoolSize int = 4

@description('Postgres: how the app signs in. managedIdentity: passwordless, with Entra tokens of two user-assigned identities (recommended). password: logins whose passwords are Container Apps secrets.')
@allowed([
  'managedIdentity'
  'password'
])
param postgresAuth string = 'managedIdentity'

@description('Postgres with postgresAuth = password: the administrator login, which the migration job signs in as.')
param postgresAdminLogin string = 'itemsadmin'

@description('Postgres with postgresAuth = password: its password. Never in a parameters file; pass it on the command line or from a key vault.')
@secure()
param postgresAdminPassword string = ''

@description('Postgres with postgresAuth = password: the login the API signs in as; the migration job creates it.')
param postgresAppLogin string = 'items_app'

@description('Postgres with postgresAuth = password: its password. Never in a parameters file.')
@secure()
param postgresAppPassword string = ''

@description('Postgres: Entra object ID of the person or group made administrator, so people can sign in. Default: whoever deploys.')
param postgresEntraAdminObjectId string = deployer().objectId

@description('Postgres: that administrator\'s name: a user principal name, or the display name of a group or service principal. Default: the deployer\'s user principal name, which is empty when a service principal deploys: then no such administrator is set (pass one, e.g. a group).')
param postgresEntraAdminName string = deployer().userPrincipalName

@description('Postgres: that administrator\'s kind.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param postgresEntraAdminType string = 'User'

@description('Postgres: server name. Empty: <namePrefix>-pg-<unique suffix>. Set it to adopt a server restored to a point in time (README).')
param postgresServerName string = ''

@description('Postgres: compute size. Burstable B1ms allows 50 connections, 15 of them reserved for Azure.')
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

@description('Where Azure Monitor emails the alerts (5xx, restarts, the Postgres server). Empty: the alerts fire in Azure Monitor and nobody is emailed.')
param alertEmailAddress string = ''

@description('5xx answers of one app within 5 minutes that raise an alert.')
@minValue(1)
param alertHttp5xxThreshold int = 10

@description('Postgres: average connections over 15 minutes that raise an alert. 28 is 80% of the 35 Standard_B1ms allows the app, above what the replicas hold between deploys: (apiPoolSize + 1) x apiMaxReplicas + 3 people (deploy/azure/README.md).')
@minValue(1)
param postgresConnectionsAlertThreshold int = 28

@description('Tags for every resource (azd adds azd-env-name).')
param tags object = {}

var onSqlite = databaseBackend == 'sqlite'
var onPostgres = databaseBackend == 'postgres'
var entraSignIn = onPostgres && postgresAuth == 'managedIdentity'
var uniqueSuffix = uniqueString(resourceGroup().id)

// Storage account and registry names: lowercase letters and digits only, globally unique.
var compactPrefix = replace(toLower(namePrefix), '-', '')
var storageAccountName = take('${compactPrefix}${uniqueSuffix}', 24)
var registryName = take('${compactPrefix}${uniqueSuffix}', 50)
var serverName = empty(postgresServerName) ? take('${toLower(namePrefix)}-pg-${uniqueSuffix}', 63) : postgresServerName

// Names are worked out here, from parameters only, so what-if can show every resource they name.
var logsName = '${namePrefix}-logs'
var appInsightsName = '${namePrefix}-insights'
var environmentName = '${namePrefix}-env'
var apiIdentityName = '${namePrefix}-api-identity'
var migrateIdentityName = '${namePrefix}-migrate-identity'

// Until azd has pushed the first image, the apps run a public placeholder.
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'

module monitoring 'modules/monitoring.bicep' = {
  params: {
    location: location
    name: logsName
    appInsightsName: appInsightsName
    retentionDays: logRetentionDays
    tags: tags
  }
}

module environment 'modules/environment.bicep' = {
  dependsOn: [
    monitoring
  ]
  params: {
    location: location
    name: environmentName
    logAnalyticsWorkspaceName: logsName
    appInsightsName: appInsightsName
    tags: tags
  }
}

module identities 'modules/identities.bicep' = {
  params: {
    location: location
    apiIdentityName: apiIdentityName
    migrateIdentityName: migrateIdentityName
    pullIdentityName: '${namePrefix}-pull-identity'
    postgresEntraSignIn: entraSignIn
    registryPull: useContainerRegistry
    tags: tags
  }
}

module registry 'modules/registry.bicep' = if (useContainerRegistry) {
  params: {
    location: location
    name: registryName
    pullPrincipalId: identities.outputs.pullIdentityPrincipalId
    tags: tags
  }
}

module sqliteStorage 'modules/sqlite-storage.bicep' = if (onSqlite) {
  dependsOn: [
    environment
  ]
  params: {
    location: location
    storageAccountName: storageAccountName
    shareName: 'items-data'
    shareQuotaGiB: shareQuotaGiB
    environmentName: environmentName
    environmentStorageName: 'data'
    tags: tags
  }
}

module postgres 'modules/postgres.bicep' = if (onPostgres) {
  params: {
    location: location
    serverName: serverName
    skuName: postgresSkuName
    skuTier: postgresSkuTier
    version: postgresVersion
    storageGiB: postgresStorageGiB
    backupRetentionDays: postgresBackupRetentionDays
    databaseName: 'items'
    passwordSignIn: postgresAuth == 'password'
    administratorLogin: postgresAdminLogin
    administratorLoginPassword: postgresAdminPassword
    migrateAdministrator: entraSignIn
    migrateIdentityName: migrateIdentityName
    migrateIdentityPrincipalId: identities.outputs.migrateIdentityPrincipalId
    entraAdminObjectId: postgresEntraAdminObjectId
    entraAdminName: postgresEntraAdminName
    entraAdminType: postgresEntraAdminType
    tags: tags
  }
}

// Which registry the apps pull from: the ACR with the pull identity, or GHCR with a token, or
// none (public packages, or the placeholder).
var registryAuth = useContainerRegistry ? 'identity' : ((empty(ghcrUsername) || empty(ghcrPassword)) ? 'none' : 'password')
var registryServer = useContainerRegistry ? registry!.outputs.loginServer : ((registryAuth == 'password') ? 'ghcr.io' : '')

module apiRunningImage 'modules/running-image.bicep' = if (empty(apiImage) && empty(imageRepository)) {
  params: {
    appName: apiAppName
    exists: apiAppExists
  }
}

module webRunningImage 'modules/running-image.bicep' = if (empty(webImage) && empty(imageRepository)) {
  params: {
    appName: webAppName
    exists: webAppExists
  }
}

// An explicit image, else the repository and tag, else (azd) what runs now, else the placeholder.
var apiImageRef = empty(apiImage) ? (empty(imageRepository) ? (apiAppExists ? apiRunningImage!.outputs.image : placeholderImage) : '${imageRepository}/api:${imageTag}') : apiImage
var webImageRef = empty(webImage) ? (empty(imageRepository) ? (webAppExists ? webRunningImage!.outputs.image : placeholderImage) : '${imageRepository}/web:${imageTag}') : webImage

// The role the API signs in as: its own identity (Entra), or the app login (password).
var apiDatabaseRole = entraSignIn ? apiIdentityName : postgresAppLogin

module api 'modules/api-app.bicep' = {
  params: {
    location: location
    name: apiAppName
    environmentId: environment.outputs.id
    image: apiImageRef
    tags: union(tags, {
      'azd-service-name': 'api'
    })
    databaseBackend: databaseBackend
    sqliteStorageName: onSqlite ? sqliteStorage!.outputs.environmentStorageName : ''
    postgresHost: onPostgres ? postgres!.outputs.fqdn : ''
    postgresDatabase: onPostgres ? postgres!.outputs.databaseName : ''
    postgresUser: apiDatabaseRole
    poolSize: apiPoolSize
    postgresAuth: postgresAuth
    entraIdentityId: identities.outputs.apiIdentityId
    entraClientId: identities.outputs.apiIdentityClientId
    postgresPassword: (onPostgres && (!entraSignIn)) ? postgresAppPassword : ''
    minReplicas: apiMinReplicas
    maxReplicas: apiMaxReplicas
    registryAuth: registryAuth
    registryServer: registryServer
    registryIdentityId: identities.outputs.pullIdentityId
    registryUsername: ghcrUsername
    registryPassword: ghcrPassword
  }
}

module migrateJob 'modules/migrate-job.bicep' = if (onPostgres) {
  params: {
    location: location
    name: migrateJobName
    environmentId: environment.outputs.id
    image: apiImageRef
    tags: tags
    postgresHost: postgres!.outputs.fqdn
    postgresDatabase: postgres!.outputs.databaseName
    postgresAuth: postgresAuth
    adminUser: entraSignIn ? migrateIdentityName : postgresAdminLogin
    entraIdentityId: identities.outputs.migrateIdentityId
    entraClientId: identities.outputs.migrateIdentityClientId
    adminPassword: entraSignIn ? '' : postgresAdminPassword
    appRole: apiDatabaseRole
    appRoleObjectId: identities.outputs.apiIdentityPrincipalId
    appRolePassword: entraSignIn ? '' : postgresAppPassword
    registryAuth: registryAuth
    registryServer: registryServer
    registryIdentityId: identities.outputs.pullIdentityId
    registryUsername: ghcrUsername
    registryPassword: ghcrPassword
  }
}

module web 'modules/web-app.bicep' = {
  params: {
    location: location
    name: webAppName
    environmentId: environment.outputs.id
    image: webImageRef
    tags: union(tags, {
      'azd-service-name': 'web'
    })
    apiFqdn: api.outputs.fqdn
    registryAuth: registryAuth
    registryServer: registryServer
    registryIdentityId: identities.outputs.pullIdentityId
    registryUsername: ghcrUsername
    registryPassword: ghcrPassword
  }
}

module alerts 'modules/alerts.bicep' = {
  params: {
    namePrefix: namePrefix
    apiAppName: api.outputs.name
    webAppName: web.outputs.name
    onPostgres: onPostgres
    postgresServerName: onPostgres ? postgres!.outputs.serverName : ''
    alertEmailAddress: alertEmailAddress
    http5xxThreshold: alertHttp5xxThreshold
    postgresConnectionsThreshold: postgresConnectionsAlertThreshold
    tags: tags
  }
}

@description('Public URL of the app.')
output webUrl string = 'https://${web.outputs.fqdn}'

@description('Internal FQDN of the API (reachable only inside the environment).')
output apiInternalFqdn string = api.outputs.fqdn

@description('SQLite: the storage account holding the share with the database (backups: README).')
output storageAccountName string = onSqlite ? sqliteStorage!.outputs.storageAccountName : ''

@description('SQLite: the Azure Files share with the database.')
output shareName string = onSqlite ? sqliteStorage!.outputs.shareName : ''

@description('Postgres: the server\'s host name.')
output postgresServerFqdn string = onPostgres ? postgres!.outputs.fqdn : ''

@description('Postgres: the role the API signs in as (its identity\'s name, or the app login).')
output postgresUser string = onPostgres ? apiDatabaseRole : ''

@description('Postgres: the person or group who is an Entra administrator (empty when none was set).')
output postgresEntraAdmin string = onPostgres ? postgres!.outputs.entraAdminName : ''

@description('Postgres: the migration job to run before each API update; empty on SQLite.')
output migrateJobName string = onPostgres ? migrateJob!.outputs.name : ''

@description('Application Insights component with the API\'s traces (deploy/azure/README.md: where to look).')
output applicationInsightsName string = monitoring.outputs.appInsightsName

@description('Action group the alerts go to.')
output alertActionGroupName string = alerts.outputs.actionGroupName

@description('The registry azd pushes to (empty without useContainerRegistry).')
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = useContainerRegistry ? registry!.outputs.loginServer : ''
