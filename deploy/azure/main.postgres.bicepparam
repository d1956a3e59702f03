// Production on Azure Database for PostgreSQL, for a deployment by hand or by the workflow:
//   az deployment group create -g "$RG" --parameters deploy/azure/main.postgres.bicepparam \
//     --parameters imageTag=sha-<commit>
// az compiles this file once without the command line's overrides before it applies them, so
// whatever the command line overrides has a value here. Secrets come from the environment.
using './main.bicep'

param databaseBackend = 'postgres'

// Lowercase: ghcr.io/<owner>/<repo>.
param imageRepository = 'ghcr.io/your-github-owner/your-repo'
param imageTag = 'latest'

// Both empty when the GHCR packages are public.
param ghcrUsername = readEnvironmentVariable('GHCR_USERNAME', '')
param ghcrPassword = readEnvironmentVariable('GHCR_PASSWORD', '')

// Entra sign-in, two identities; 'password' uses the two passwords below instead.
param postgresAuth = 'managedIdentity'
param postgresAdminPassword = readEnvironmentVariable('POSTGRES_ADMIN_PASSWORD', '')
param postgresAppPassword = readEnvironmentVariable('POSTGRES_APP_PASSWORD', '')

// The connection budget of Standard_B1ms (35 usable): (4 + 1) x 3 x 2 + 1 + 3 = 34.
param postgresSkuName = 'Standard_B1ms'
param apiMinReplicas = 2
param apiMaxReplicas = 3
param apiPoolSize = 4

// Where Azure Monitor emails the alerts; empty: nobody is emailed.
param alertEmailAddress = readEnvironmentVariable('ALERT_EMAIL_ADDRESS', '')
