// Azure Database for PostgreSQL Flexible Server: the server, its firewall rule and TLS setting,
// the database, and its Entra administrators. Only deployed with databaseBackend 'postgres'.
//
// A flexible server applies one change at a time: a second child update that arrives while one
// runs fails with ServerIsBusy. ARM starts independent resources together, so every child below
// depends on the one before it, in one chain: firewall rule, setting, database, administrators.

@description('Azure region.')
param location string

@description('Server name: 3-63 lowercase letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(63)
param serverName string

@description('Compute size, e.g. Standard_B1ms.')
param skuName string

@description('The tier that goes with skuName.')
@allowed([
  'Burstable'
  'GeneralPurpose'
  'MemoryOptimized'
])
param skuTier string

@description('PostgreSQL major version.')
param version string

@description('Storage in GiB (grows by itself when nearly full).')
@minValue(32)
param storageGiB int

@description('Days of automated backups, the window of point-in-time restore.')
@minValue(7)
@maxValue(35)
param backupRetentionDays int

@description('Name of the application database.')
param databaseName string

@description('Allow password sign-in (postgresAuth password). Entra sign-in is always on, for people.')
param passwordSignIn bool

@description('Password sign-in: the administrator login, fixed once the server exists.')
param administratorLogin string

@description('Password sign-in: the administrator password.')
@secure()
param administratorLoginPassword string

@description('Entra sign-in for the app: make the migration identity an administrator.')
param migrateAdministrator bool

@description('Name of the migration identity.')
param migrateIdentityName string

@description('Principal (object) ID of the migration identity. A parameter, so the administrator resource name is known when the deployment starts.')
param migrateIdentityPrincipalId string

@description('A person or group who can sign in as administrator: Entra object ID. Empty: none.')
param entraAdminObjectId string

@description('Its name as Entra shows it: the user principal name of a user, the display name of a group or service principal. Empty: no such administrator.')
param entraAdminName string

@description('Its kind.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param entraAdminType string

@description('Tags for the server.')
param tags object

var tenantId = tenant().tenantId
var entraAdminSet = (!empty(entraAdminObjectId)) && (!empty(entraAdminName))

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2025-08-01' = {
  name: serverName
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: version
    storage: {
      storageSizeGB: storageGiB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: backupRetentionDays
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: passwordSignIn ? 'Enabled' : 'Disabled'
      tenantId: tenantId
    }
    administratorLogin: passwordSignIn ? administratorLogin : null
    administratorLoginPassword: passwordSignIn ? administratorLoginPassword : null
    // Public endpoint, reachable from Azure services only (the firewall rule below); the README
    // shows the private (VNet) variant.
    network: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

// 0.0.0.0 to 0.0.0.0 is Azure's "allow Azure services": any Azure address, no internet ones.
resource firewall 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2025-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

// Refuse every connection without TLS (the default; set so that it stays so).
resource requireTls 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2025-08-01' = {
  parent: server
  name: 'require_secure_transport'
  dependsOn: [
    firewall
  ]
  properties: {
    value: 'on'
    source: 'user-override'
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2025-08-01' = {
  parent: server
  name: databaseName
  dependsOn: [
    requireTls
  ]
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

// The administrator entry is named by the principal's object ID.
resource migrateAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2025-08-01' = if (migrateAdministrator) {
  parent: server
  name: migrateIdentityPrincipalId
  dependsOn: [
    database
  ]
  properties: {
    principalName: migrateIdentityName
    principalType: 'ServicePrincipal'
    tenantId: tenantId
  }
}

// Also after the database: when the migration identity is skipped, its place in the chain is too.
resource entraAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2025-08-01' = if (entraAdminSet) {
  parent: server
  name: entraAdminObjectId
  dependsOn: [
    database
    migrateAdmin
  ]
  properties: {
    principalName: entraAdminName
    principalType: entraAdminType
    tenantId: tenantId
  }
}

@description('Host name of the server.')
output fqdn string = server.properties.fullyQualifiedDomainName

@description('Name of the server.')
output serverName string = server.name

@description('Name of the application database.')
output databaseName string = database.name

@description('The person or group made administrator (empty when none was).')
output entraAdminName string = entraAdminSet ? entraAdminName : ''
