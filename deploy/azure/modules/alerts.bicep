// Azure Monitor metric alerts on what should wake someone, all sent to one action group that
// emails alertEmailAddress: each app's 5xx answers and replica restarts (Container Apps' own
// metrics), and on Postgres the flexible server's connections, CPU and storage. What each means
// and what to do: docs/operations.md#azure.

@description('Prefix of the alert and action group names.')
param namePrefix string

@description('Name of the API container app.')
param apiAppName string

@description('Name of the web container app.')
param webAppName string

@description('Postgres: also alert on the flexible server.')
param onPostgres bool

@description('Postgres: name of the flexible server.')
param postgresServerName string = ''

@description('Where the alerts are emailed. Empty: the alerts still show in Azure Monitor, nobody is emailed.')
param alertEmailAddress string

@description('5xx answers of one app within 5 minutes that raise an alert.')
@minValue(1)
param http5xxThreshold int

@description('Postgres: average active connections over 15 minutes that raise an alert.')
@minValue(1)
param postgresConnectionsThreshold int

@description('Tags for the action group and the alerts.')
param tags object

var alertActions = [
  {
    actionGroupId: actionGroup.id
  }
]

resource apiApp 'Microsoft.App/containerApps@2026-01-01' existing = {
  name: apiAppName
}

resource webApp 'Microsoft.App/containerApps@2026-01-01' existing = {
  name: webAppName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${namePrefix}-oncall'
  location: 'global'
  tags: tags
  properties: {
    // At most 12 characters, shown in the emails.
    groupShortName: take('${namePrefix}-oncall', 12)
    enabled: true
    emailReceivers: empty(alertEmailAddress) ? [] : [
      {
        name: 'on-call'
        emailAddress: alertEmailAddress
        useCommonAlertSchema: true
      }
    ]
  }
}

// --- the container apps -------------------------------------------------------------------------

resource api5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-api-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The API answered more than ${http5xxThreshold} requests with a 5xx within 5 minutes (docs/operations.md#azure).'
    severity: 1
    enabled: true
    scopes: [
      apiApp.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    targetResourceType: 'Microsoft.App/containerApps'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Server errors'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: http5xxThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

// The web tier's own 5xx: nginx's 502/504 when it cannot reach the API, and the API's passed on.
resource web5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-web-5xx'
  location: 'global'
  tags: tags
  properties: {
    description: 'The web tier answered more than ${http5xxThreshold} requests with a 5xx within 5 minutes (docs/operations.md#azure).'
    severity: 1
    enabled: true
    scopes: [
      webApp.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    targetResourceType: 'Microsoft.App/containerApps'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Server errors'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: http5xxThreshold
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

// More than one restart in 15 minutes: a replica failing its liveness probe or crashing in a loop
// (one restart alone is a replica replaced, which Container Apps does by itself).
resource apiRestarts 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-api-restarts'
  location: 'global'
  tags: tags
  properties: {
    description: 'API replicas restarted more than once within 15 minutes (docs/operations.md#azure).'
    severity: 2
    enabled: true
    scopes: [
      apiApp.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    targetResourceType: 'Microsoft.App/containerApps'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Restarts'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'RestartCount'
          operator: 'GreaterThan'
          threshold: 1
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

resource webRestarts 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namePrefix}-web-restarts'
  location: 'global'
  tags: tags
  properties: {
    description: 'Web tier replicas restarted more than once within 15 minutes (docs/operations.md#azure).'
    severity: 2
    enabled: true
    scopes: [
      webApp.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    targetResourceType: 'Microsoft.App/containerApps'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Restarts'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'RestartCount'
          operator: 'GreaterThan'
          threshold: 1
          timeAggregation: 'Total'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

// --- the flexible server (Postgres) -------------------------------------------------------------

// Near the connection budget (deploy/azure/README.md): new replicas or a deploy would find none.
resource postgresConnections 'Microsoft.Insights/metricAlerts@2018-03-01' = if (onPostgres) {
  name: '${namePrefix}-postgres-connections'
  location: 'global'
  tags: tags
  properties: {
    description: 'The server held more than ${postgresConnectionsThreshold} connections on average for 15 minutes (docs/operations.md#azure).'
    severity: 2
    enabled: true
    scopes: [
      resourceId('Microsoft.DBforPostgreSQL/flexibleServers', postgresServerName)
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    targetResourceType: 'Microsoft.DBforPostgreSQL/flexibleServers'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Active connections'
          metricNamespace: 'Microsoft.DBforPostgreSQL/flexibleServers'
          metricName: 'active_connections'
          operator: 'GreaterThan'
          threshold: postgresConnectionsThreshold
          timeAggregation: 'Average'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

resource postgresCpu 'Microsoft.Insights/metricAlerts@2018-03-01' = if (onPostgres) {
  name: '${namePrefix}-postgres-cpu'
  location: 'global'
  tags: tags
  properties: {
    description: 'The server\'s CPU was above 80% on average for 15 minutes (docs/operations.md#azure).'
    severity: 2
    enabled: true
    scopes: [
      resourceId('Microsoft.DBforPostgreSQL/flexibleServers', postgresServerName)
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    targetResourceType: 'Microsoft.DBforPostgreSQL/flexibleServers'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'CPU'
          metricNamespace: 'Microsoft.DBforPostgreSQL/flexibleServers'
          metricName: 'cpu_percent'
          operator: 'GreaterThan'
          threshold: 80
          timeAggregation: 'Average'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

// Storage grows by itself (autoGrow) when it is nearly full; above 85% it is about to, or could not.
resource postgresStorage 'Microsoft.Insights/metricAlerts@2018-03-01' = if (onPostgres) {
  name: '${namePrefix}-postgres-storage'
  location: 'global'
  tags: tags
  properties: {
    description: 'The server\'s storage was more than 85% used (docs/operations.md#azure).'
    severity: 2
    enabled: true
    scopes: [
      resourceId('Microsoft.DBforPostgreSQL/flexibleServers', postgresServerName)
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    targetResourceType: 'Microsoft.DBforPostgreSQL/flexibleServers'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'Storage used'
          metricNamespace: 'Microsoft.DBforPostgreSQL/flexibleServers'
          metricName: 'storage_percent'
          operator: 'GreaterThan'
          threshold: 85
          timeAggregation: 'Maximum'
        }
      ]
    }
    autoMitigate: true
    actions: alertActions
  }
}

@description('Name of the action group the alerts go to.')
output actionGroupName string = actionGroup.name
