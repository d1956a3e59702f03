// SQLite's home: a storage account with an Azure Files share, registered in the Container Apps
// environment so the API can mount it on /data. Only deployed with databaseBackend 'sqlite'.

@description('Azure region.')
param location string

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Name of the share that holds app.db.')
param shareName string

@description('Size of the share in GiB.')
@minValue(1)
param shareQuotaGiB int

@description('Name of the Container Apps environment to register the share in.')
param environmentName string

@description('Name of the share in the environment (what the API volume refers to).')
param environmentStorageName string

@description('Tags for the storage account.')
param tags object

resource storage 'Microsoft.Storage/storageAccounts@2025-08-01' = {
  name: storageAccountName
  location: location
  tags: tags
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

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2025-08-01' = {
  parent: storage
  name: 'default'
  properties: {
    shareDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource share 'Microsoft.Storage/storageAccounts/fileServices/shares@2025-08-01' = {
  parent: fileService
  name: shareName
  properties: {
    shareQuota: shareQuotaGiB
    enabledProtocols: 'SMB'
  }
}

resource environment 'Microsoft.App/managedEnvironments@2026-01-01' existing = {
  name: environmentName
}

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2026-01-01' = {
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

@description('The storage account holding the share.')
output storageAccountName string = storage.name

@description('The share with the database.')
output shareName string = share.name

@description('The environment storage the API mounts.')
output environmentStorageName string = environmentStorage.name
