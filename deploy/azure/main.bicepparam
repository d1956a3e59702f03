// The azd path (azure.yaml): azd compiles this file with its environment's variables, so
// `azd env set NAME value` chooses. ITEMS_DATABASE_BACKEND picks sqlite (default) or postgres.
// Images come from the registry this deployment creates; azd sets SERVICE_*_IMAGE_NAME after
// the first push and SERVICE_*_RESOURCE_EXISTS before each provision.
using './main.bicep'

param location = readEnvironmentVariable('AZURE_LOCATION')
param databaseBackend = readEnvironmentVariable('ITEMS_DATABASE_BACKEND', 'sqlite')
param useContainerRegistry = true
param apiImage = readEnvironmentVariable('SERVICE_API_IMAGE_NAME', '')
param webImage = readEnvironmentVariable('SERVICE_WEB_IMAGE_NAME', '')
param apiAppExists = bool(readEnvironmentVariable('SERVICE_API_RESOURCE_EXISTS', 'false'))
param webAppExists = bool(readEnvironmentVariable('SERVICE_WEB_RESOURCE_EXISTS', 'false'))
param postgresAuth = readEnvironmentVariable('ITEMS_POSTGRES_AUTH', 'managedIdentity')
param postgresAdminPassword = readEnvironmentVariable('ITEMS_POSTGRES_ADMIN_PASSWORD', '')
param postgresAppPassword = readEnvironmentVariable('ITEMS_POSTGRES_APP_PASSWORD', '')
param alertEmailAddress = readEnvironmentVariable('ITEMS_ALERT_EMAIL', '')
param tags = {
  'azd-env-name': readEnvironmentVariable('AZURE_ENV_NAME')
}
