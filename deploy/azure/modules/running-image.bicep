// The image a container app runs now, for the azd path: re-provisioning keeps it instead of
// putting a placeholder back until the next deploy. A module of its own because a deployment
// cannot read a resource that it also writes.

@description('Name of the container app.')
param appName string

@description('Whether the app exists (azd sets SERVICE_<NAME>_RESOURCE_EXISTS).')
param exists bool

resource app 'Microsoft.App/containerApps@2026-01-01' existing = if (exists) {
  name: appName
}

@description('Image of the app\'s first container; empty when the app does not exist.')
output image string = exists ? app!.properties.template.containers[0].image : ''
