// Production on SQLite, for a deployment by hand or by the workflow:
//   az deployment group create -g "$RG" --parameters deploy/azure/main.sqlite.bicepparam \
//     --parameters imageTag=sha-<commit>
// az compiles this file once without the command line's overrides before it applies them, so
// whatever the command line overrides has a value here. Secrets come from the environment.
using './main.bicep'

param databaseBackend = 'sqlite'

// Lowercase: ghcr.io/<owner>/<repo>.
param imageRepository = 'ghcr.io/your-github-owner/your-repo'
param imageTag = 'latest'

// Both empty when the GHCR packages are public.
param ghcrUsername = readEnvironmentVariable('GHCR_USERNAME', '')
param ghcrPassword = readEnvironmentVariable('GHCR_PASSWORD', '')

// Where Azure Monitor emails the alerts; empty: nobody is emailed.
param alertEmailAddress = readEnvironmentVariable('ALERT_EMAIL_ADDRESS', '')
