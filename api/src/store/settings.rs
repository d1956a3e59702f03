//! What a store is opened with: plain settings data, built by `config` from the environment.
//! Each backend reads the part that concerns it; how it uses them stays in the backend.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JournalMode {
    /// Write-ahead log: readers never block on the writer. Needs a local filesystem.
    Wal,
    /// Rollback journal: works on network shares (Azure Files/SMB) where WAL's shared memory does not.
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit: an acknowledged write survives a power loss.
    Full,
    /// In WAL mode, fsync only at checkpoints: survives a crash of the process, but the last
    /// commits may be lost on power loss. Faster on slow disks.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub journal_mode: JournalMode,
    pub synchronous: Synchronous,
    pub busy_timeout: Duration,
    pub read_connections: usize,
    /// Apply missing migrations when opening; otherwise refuse a file whose schema is behind.
    pub migrate_on_start: bool,
}

/// Pool and timeout settings (`DATABASE_POOL_SIZE`, ...).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections this process opens at most.
    pub size: usize,
    /// How long a request waits for a free connection before a 503.
    pub wait_timeout: Duration,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long one statement may run before it is cancelled and the request gets a 503.
    pub statement_timeout: Duration,
    /// Apply missing migrations when connecting; otherwise wait until `items-api migrate` has.
    pub migrate_on_start: bool,
}

/// Entra ID in Azure's public cloud; the AKS webhook sets `AZURE_AUTHORITY_HOST` to the cloud's own.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// How Postgres connections sign in when the URL carries no password.
#[derive(Clone, PartialEq, Eq)]
pub enum SignIn {
    /// The URL's password, or `DATABASE_PASSWORD_FILE` (read again for every new connection).
    Password { file: Option<PathBuf> },
    /// An Entra ID token from the Container Apps managed identity endpoint.
    ManagedIdentity {
        endpoint: String,
        secret: String,
        client_id: Option<String>,
    },
    /// An Entra ID token for the pod's federated service account token (AKS workload identity).
    WorkloadIdentity {
        authority_host: String,
        tenant_id: String,
        client_id: String,
        token_file: PathBuf,
    },
}

impl Default for SignIn {
    fn default() -> Self {
        Self::Password { file: None }
    }
}

/// Never shows the identity endpoint's secret.
impl std::fmt::Debug for SignIn {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password { file } => formatter
                .debug_struct("Password")
                .field("file", file)
                .finish(),
            Self::ManagedIdentity {
                endpoint,
                client_id,
                ..
            } => formatter
                .debug_struct("ManagedIdentity")
                .field("endpoint", endpoint)
                .field("client_id", client_id)
                .finish_non_exhaustive(),
            Self::WorkloadIdentity {
                authority_host,
                tenant_id,
                client_id,
                token_file,
            } => formatter
                .debug_struct("WorkloadIdentity")
                .field("authority_host", authority_host)
                .field("tenant_id", tenant_id)
                .field("client_id", client_id)
                .field("token_file", token_file)
                .finish(),
        }
    }
}

/// The role the service signs in as when another one migrates (Postgres), and how to create it
/// when it does not exist yet.
#[derive(Debug, Clone)]
pub struct AppRole {
    pub name: String,
    pub create: RoleCreation,
}

#[derive(Debug, Clone)]
pub enum RoleCreation {
    /// It must exist already.
    Existing,
    /// A login with this password (created, or its password set to this one).
    Password(String),
    /// An Azure Database for PostgreSQL role for the Entra principal with this object id.
    EntraObjectId(String),
}
