//! Every setting, read from the environment (or the matching `--flag`) and checked at start-up.
//!
//! The doc comment on each field is its `--help` text and its row in the README's settings table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::store::settings::{
    DEFAULT_AUTHORITY_HOST, JournalMode, PoolOptions, SignIn, SqliteOptions, Synchronous,
};
use crate::store::{Location, LocationError, StoreSettings};

/// Build metadata, fixed at compile time; `BUILD_VERSION`/`BUILD_DATE`/`VCS_REF` in the
/// environment of `cargo build` set them, and the same variables at run time override them.
pub mod build {
    const fn or(value: Option<&'static str>, fallback: &'static str) -> &'static str {
        match value {
            Some(value) if !value.is_empty() => value,
            _ => fallback,
        }
    }
    pub const VERSION: &str = or(option_env!("BUILD_VERSION"), env!("CARGO_PKG_VERSION"));
    pub const DATE: &str = or(option_env!("BUILD_DATE"), "unknown");
    pub const VCS_REF: &str = or(option_env!("VCS_REF"), "unknown");
}

#[derive(Debug, Parser)]
#[command(
    name = "items-api",
    version = build::VERSION,
    about = "Items API: serve a list of short text items over HTTP (list, add, edit, delete, and \
             a stream of every change), stored in SQLite or Postgres.",
    long_about = "Items API: serve a list of short text items over HTTP (list, add, edit, delete, \
        and a stream of every change), stored in SQLite or Postgres.\n\n\
        Without a command, the service starts; the commands below run beside it. Every option \
        can also be set with the environment variable shown beside it; a flag wins over the \
        variable. `items-api COMMAND --help` shows a command's own options."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Probe GET /api/healthz on the local server (the port of BIND_ADDR); exit 0 when it answers
    /// 200, 1 otherwise. For container health checks in images without a shell or curl.
    Healthcheck {
        /// Give up after this many milliseconds.
        #[arg(long, env = "HEALTHCHECK_TIMEOUT_MS", value_name = "HEALTHCHECK_TIMEOUT_MS",
              default_value_t = 2000,
              value_parser = clap::value_parser!(u64).range(1..=60_000))]
        timeout_ms: u64,
    },
    /// Write a consistent copy of the database (DATABASE_URL, else DB_PATH) to FILE, a new SQLite
    /// file, while the service keeps running.
    Backup {
        /// Where to write the backup; must not exist yet.
        file: PathBuf,
    },
    /// Replace the SQLite database (DB_PATH) with the content of a backup FILE. Stop the service
    /// first. For Postgres, use `transfer` into an empty database.
    Restore {
        /// A file written by `items-api backup` (or any intact items database).
        file: PathBuf,
    },
    /// Apply the missing schema migrations to the database (DATABASE_URL, else DB_PATH), as its
    /// owner, then exit. On Postgres, also give the role the service signs in as
    /// (MIGRATE_APP_ROLE) exactly the rights serving needs.
    Migrate {
        /// Postgres: the role the service signs in as; gets CONNECT, USAGE on the schema,
        /// SELECT/INSERT/UPDATE/DELETE on items (and its id sequence), SELECT on items_revision
        /// and items_schema_migrations. Unset: grant nothing.
        #[arg(long, env = "MIGRATE_APP_ROLE")]
        app_role: Option<String>,
        /// With MIGRATE_APP_ROLE: a file holding its password; the role is created as a login
        /// with it, or its password is set to it.
        #[arg(
            long,
            env = "MIGRATE_APP_ROLE_PASSWORD_FILE",
            requires = "app_role",
            conflicts_with = "app_role_entra_object_id"
        )]
        app_role_password_file: Option<PathBuf>,
        /// With MIGRATE_APP_ROLE on Azure Database for PostgreSQL: the object id of the Entra
        /// principal (the service's managed identity); the role is created for it when missing.
        #[arg(long, env = "MIGRATE_APP_ROLE_ENTRA_OBJECT_ID", requires = "app_role")]
        app_role_entra_object_id: Option<String>,
    },
    /// Copy every item, with its id, text and created_at, from one database to another: SQLite
    /// to Postgres, Postgres to SQLite, or either to its own kind. The target must hold no items;
    /// the source may stay in use. Both sides are compared afterwards (count and checksum).
    Transfer {
        /// Source: a SQLite file path, `sqlite://PATH`, or a Postgres URL.
        #[arg(long, env = "TRANSFER_FROM", hide_env_values = true, value_parser = parse_database_url)]
        from: DatabaseUrl,
        /// Target: a SQLite file path, `sqlite://PATH`, or a Postgres URL.
        #[arg(long, env = "TRANSFER_TO", hide_env_values = true, value_parser = parse_database_url)]
        to: DatabaseUrl,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatabaseAuth {
    /// The URL's password, DATABASE_PASSWORD_FILE, or none.
    Password,
    /// An Entra ID token from the Azure managed identity endpoint.
    AzureManagedIdentity,
    /// An Entra ID token for the pod's federated service account token (AKS workload identity).
    AzureWorkloadIdentity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppEnv {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Human-readable, coloured when the output is a terminal.
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address and port to listen on: IP:PORT, or HOST:PORT with a host name that resolves here
    /// (`localhost:8080`). Port 0 picks a free port.
    #[arg(help_heading = "Serving", long, env = "BIND_ADDR", default_value = "127.0.0.1:8000",
          value_parser = parse_bind_addr)]
    pub bind_addr: SocketAddr,

    /// Where to serve Prometheus metrics (`/metrics`), IP:PORT or HOST:PORT, apart from the public
    /// port so a proxy in front never exposes them. Unset or empty: no metrics are kept at all.
    #[arg(help_heading = "Serving", long, env = "METRICS_ADDR", value_parser = parse_optional_addr,
          default_value = "", hide_default_value = true)]
    pub metrics_addr: MaybeAddr,

    /// SQLite database file; its directory is created when missing.
    #[arg(
        help_heading = "Database",
        long,
        env = "DB_PATH",
        default_value = "./data/app.db",
        global = true
    )]
    pub db_path: PathBuf,

    /// The database: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=MODE&sslrootcert=FILE]`
    /// (libpq's URL form; sslmode disable, prefer, require, verify-ca or verify-full) or
    /// `sqlite://PATH`. Unset or empty: the SQLite file at DB_PATH.
    #[arg(help_heading = "Database", long, env = "DATABASE_URL", default_value = "", hide_default_value = true,
          hide_env_values = true, value_parser = parse_database_url, global = true)]
    pub database_url: DatabaseUrl,

    /// File holding the Postgres password, used when DATABASE_URL has none (the Docker and
    /// Compose secrets convention); read again for every new connection.
    #[arg(
        help_heading = "Database",
        long,
        env = "DATABASE_PASSWORD_FILE",
        global = true
    )]
    pub database_password_file: Option<PathBuf>,

    /// Postgres: how to sign in when DATABASE_URL has no password. `password`: DATABASE_PASSWORD_FILE,
    /// or none. `azure-managed-identity`: an Entra ID token from the managed identity of the
    /// Azure Container App (IDENTITY_ENDPOINT, IDENTITY_HEADER; AZURE_CLIENT_ID for a user-assigned
    /// identity), for Azure Database for PostgreSQL. `azure-workload-identity`: an Entra ID token
    /// for the pod's service account token on AKS (AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID,
    /// AZURE_TENANT_ID, AZURE_AUTHORITY_HOST, which the workload identity webhook sets).
    #[arg(help_heading = "Database", long, env = "DATABASE_AUTH", value_enum, ignore_case = true, default_value_t = DatabaseAuth::Password,
          global = true)]
    pub database_auth: DatabaseAuth,

    /// The managed identity endpoint (set by Azure Container Apps; used with
    /// DATABASE_AUTH=azure-managed-identity).
    #[arg(
        help_heading = "Database",
        long,
        env = "IDENTITY_ENDPOINT",
        global = true
    )]
    pub identity_endpoint: Option<String>,

    /// The secret for IDENTITY_ENDPOINT (set by Azure Container Apps; never shown).
    #[arg(
        help_heading = "Database",
        long,
        env = "IDENTITY_HEADER",
        hide_env_values = true,
        global = true
    )]
    pub identity_header: Option<String>,

    /// Client id of the user-assigned managed identity to sign in as; unset: the system-assigned
    /// identity.
    #[arg(
        help_heading = "Database",
        long,
        env = "AZURE_CLIENT_ID",
        global = true
    )]
    pub azure_client_id: Option<String>,

    /// Entra ID tenant of the identity, for DATABASE_AUTH=azure-workload-identity (set by the AKS
    /// workload identity webhook).
    #[arg(
        help_heading = "Database",
        long,
        env = "AZURE_TENANT_ID",
        global = true
    )]
    pub azure_tenant_id: Option<String>,

    /// File holding the pod's federated service account token, read again for every token
    /// exchange, for DATABASE_AUTH=azure-workload-identity (set by the AKS workload identity
    /// webhook; never shown).
    #[arg(
        help_heading = "Database",
        long,
        env = "AZURE_FEDERATED_TOKEN_FILE",
        global = true
    )]
    pub azure_federated_token_file: Option<PathBuf>,

    /// Entra ID endpoint that exchanges the federated token, for
    /// DATABASE_AUTH=azure-workload-identity (set by the AKS workload identity webhook).
    #[arg(help_heading = "Database", long, env = "AZURE_AUTHORITY_HOST", default_value = DEFAULT_AUTHORITY_HOST, global = true)]
    pub azure_authority_host: String,

    /// Postgres: where to listen for changes, when DATABASE_URL goes through a pooler in
    /// transaction mode (PgBouncer), which cannot pass notifications on: the server itself, in
    /// the same URL form. Unset: DATABASE_URL. Takes one more connection per process.
    #[arg(help_heading = "Postgres", long, env = "DATABASE_LISTEN_URL", default_value = "", hide_default_value = true,
          hide_env_values = true, value_parser = parse_database_url)]
    pub database_listen_url: DatabaseUrl,

    /// Postgres: connections this process opens at most.
    #[arg(help_heading = "Postgres", long, env = "DATABASE_POOL_SIZE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub database_pool_size: u64,

    /// Postgres: how long a request waits for a free connection before it is answered 503, in
    /// milliseconds.
    #[arg(help_heading = "Postgres", long, env = "DATABASE_POOL_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub database_pool_timeout_ms: u64,

    /// Postgres: how long opening one connection may take, in milliseconds.
    #[arg(help_heading = "Postgres", long, env = "DATABASE_CONNECT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub database_connect_timeout_ms: u64,

    /// Postgres: a statement running longer is cancelled and its request answered 503, in
    /// milliseconds.
    #[arg(help_heading = "Postgres", long, env = "DATABASE_STATEMENT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub database_statement_timeout_ms: u64,

    /// Apply missing schema migrations when the service starts. Unset: yes on SQLite (the file
    /// is this process's own), no on Postgres, where `items-api migrate` runs first as the
    /// database owner and the service can sign in with DML rights only; until then it waits,
    /// not ready.
    #[arg(help_heading = "Database", long, env = "MIGRATE_ON_START", value_name = "true|false", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate_on_start: Option<bool>,

    /// Deployment environment; shown by /api/health and picks the default log format.
    #[arg(help_heading = "Serving", long, env = "APP_ENV", value_enum, ignore_case = true, default_value_t = AppEnv::Development)]
    pub app_env: AppEnv,

    /// Log format [default: json in production, pretty in development].
    #[arg(
        help_heading = "Serving",
        long,
        env = "LOG_FORMAT",
        value_enum,
        ignore_case = true
    )]
    pub log_format: Option<LogFormat>,

    /// Log filter, in tracing's EnvFilter syntax (e.g. `info`, `debug`, `items_api=debug,info`).
    #[arg(help_heading = "Serving", long = "log-filter", env = "RUST_LOG", value_name = "RUST_LOG", default_value = "info",
          value_parser = parse_log_filter)]
    pub log_filter: String,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(help_heading = "Limits and timeouts", long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(64..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Longest item text in characters, after trimming; longer gets 422 (`string_too_long`).
    /// The default refuses nothing a body within the default MAX_BODY_BYTES can carry, as
    /// before the setting existed. Texts already stored are served whatever their length.
    #[arg(help_heading = "Limits and timeouts", long, env = "MAX_TEXT_CHARS", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024))]
    pub max_text_chars: u64,

    /// Directory with the web page (index.html, app.js, ...) to serve at `/`. Unset or empty: API
    /// only. `cargo run` sets it to web/static (see .cargo/config.toml).
    #[arg(help_heading = "Serving", long, env = "STATIC_DIR", value_parser = parse_static_dir)]
    pub static_dir: Option<PathBuf>,

    /// SQLite journal mode. `delete` is required on network shares such as Azure Files.
    #[arg(help_heading = "SQLite", long, env = "SQLITE_JOURNAL_MODE", value_enum, ignore_case = true, default_value_t = JournalMode::Wal,
          global = true)]
    pub sqlite_journal_mode: JournalMode,

    /// When commits reach the disk. `full`: an acknowledged write survives power loss.
    /// `normal`: survives a crash of the service, may lose the last writes on power loss.
    #[arg(help_heading = "SQLite", long, env = "SQLITE_SYNCHRONOUS", value_enum, ignore_case = true, default_value_t = Synchronous::Full,
          global = true)]
    pub sqlite_synchronous: Synchronous,

    /// How long a database operation waits for a lock held by another process, in milliseconds.
    #[arg(help_heading = "SQLite", long, env = "SQLITE_BUSY_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=600_000), global = true)]
    pub sqlite_busy_timeout_ms: u64,

    /// Reader connections (reads running at once).
    #[arg(help_heading = "SQLite", long, env = "DB_READ_CONNECTIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub db_read_connections: u64,

    /// Once the first byte of a request has arrived, its head (request line and headers) must be
    /// complete within this many seconds, however slowly it arrives, or the connection is closed.
    #[arg(help_heading = "Limits and timeouts", long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_read_timeout_secs: u64,

    /// Longest request head (request line and headers) in bytes; longer gets 431. Also what a
    /// connection buffers of a head still arriving, and of a response the client is slow to take.
    #[arg(help_heading = "Limits and timeouts", long, env = "MAX_HEADER_BYTES", default_value_t = 32_768,
          value_parser = clap::value_parser!(u64).range(8192..=1_048_576))]
    pub max_header_bytes: u64,

    /// A keep-alive connection with no request running, no response being written and no
    /// traffic for this many seconds is closed. Keep it above the keep-alive time of a proxy in
    /// front (the web tier's is 30 s).
    #[arg(help_heading = "Limits and timeouts", long, env = "KEEPALIVE_TIMEOUT_SECS", default_value_t = 75,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub keepalive_timeout_secs: u64,

    /// A response (a change stream, a long list) whose client takes no byte for this many
    /// seconds while more is waiting is cut; so is a connection whose peer acknowledges nothing
    /// sent for as long.
    #[arg(help_heading = "Limits and timeouts", long, env = "SEND_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub send_timeout_secs: u64,

    /// Connections served at once; one more is answered 503 and closed. Lowered, with a warning,
    /// to stay below the process's open-file limit.
    #[arg(help_heading = "Limits and timeouts", long, env = "MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,

    /// Change streams (`/api/items/events`) served at once; one more is answered 503. Each holds
    /// a connection for as long as its page is open. Unset: half of MAX_CONNECTIONS as lowered
    /// to the open-file limit; a value not below that limit is lowered to half of it, with a
    /// warning.
    #[arg(help_heading = "Limits and timeouts", long, env = "MAX_EVENT_STREAMS",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_event_streams: Option<u64>,

    /// Seconds between heartbeats on an idle change stream, so proxies do not close it as idle.
    #[arg(help_heading = "Limits and timeouts", long, env = "EVENT_HEARTBEAT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub event_heartbeat_secs: u64,

    /// A request that takes longer than this many seconds is answered with 503.
    #[arg(help_heading = "Limits and timeouts", long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// A request body still arriving after this many seconds is answered with 408, so a slow
    /// client does not hold a request open until REQUEST_TIMEOUT_SECS.
    #[arg(help_heading = "Limits and timeouts", long, env = "BODY_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,

    /// On SIGTERM/Ctrl-C, keep serving this many seconds with readiness failing (`stopping`), so a
    /// load balancer that polls readiness stops sending requests first; then stop accepting.
    #[arg(help_heading = "Limits and timeouts", long, env = "SHUTDOWN_DRAIN_SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub shutdown_drain_secs: u64,

    /// On SIGTERM/Ctrl-C, in-flight requests get this many seconds to finish.
    #[arg(help_heading = "Limits and timeouts", long, env = "SHUTDOWN_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_timeout_secs: u64,

    /// Version shown by /api/health (and, set as a variable, by --version) [default: baked in at
    /// build time].
    #[arg(help_heading = "Serving", long, env = "BUILD_VERSION", default_value = build::VERSION, hide_default_value = true,
          value_parser = or_default(build::VERSION))]
    pub build_version: String,

    /// Build date shown by /api/health [default: baked in at build time, else "unknown"].
    #[arg(help_heading = "Serving", long, env = "BUILD_DATE", default_value = build::DATE, hide_default_value = true,
          value_parser = or_default(build::DATE))]
    pub build_date: String,

    /// Source revision shown by /api/health [default: baked in at build time, else "unknown"].
    #[arg(help_heading = "Serving", long, env = "VCS_REF", default_value = build::VCS_REF, hide_default_value = true,
          value_parser = or_default(build::VCS_REF))]
    pub vcs_ref: String,

    #[command(flatten)]
    pub traces: TraceConfig,
}

/// OpenTelemetry traces, by the standard `OTEL_*` variables. Spans are recorded only when an OTLP
/// endpoint is set: without one the service does no tracing work at all.
#[derive(Debug, Clone, Args)]
pub struct TraceConfig {
    /// Base URL of an OTLP receiver (a collector, an agent), `http://` or `https://`; traces go
    /// to `/v1/traces` under it over HTTP, to it over gRPC. Unset: no traces.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT",
          value_name = "URL", default_value = "", hide_default_value = true,
          value_parser = parse_otlp_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT"))]
    pub endpoint: OtlpEndpoint,

    /// Full URL for traces alone, used as given (overrides OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-traces-endpoint", env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
          value_name = "URL", default_value = "", hide_default_value = true,
          value_parser = parse_otlp_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))]
    pub traces_endpoint: OtlpEndpoint,

    /// OTLP transport: `http/protobuf` or `grpc` [default: http/protobuf].
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-protocol", env = "OTEL_EXPORTER_OTLP_PROTOCOL",
          value_name = "PROTOCOL", default_value = "", hide_default_value = true,
          value_parser = or_unset(parse_otlp_protocol("OTEL_EXPORTER_OTLP_PROTOCOL")))]
    pub protocol: OrUnset<OtlpProtocol>,

    /// OTLP transport for traces alone (overrides OTEL_EXPORTER_OTLP_PROTOCOL).
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-traces-protocol", env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
          value_name = "PROTOCOL", default_value = "", hide_default_value = true,
          value_parser = or_unset(parse_otlp_protocol("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")))]
    pub traces_protocol: OrUnset<OtlpProtocol>,

    /// `otlp`, or `none` to record no traces even with an endpoint set.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-traces-exporter", env = "OTEL_TRACES_EXPORTER",
          value_name = "OTEL_TRACES_EXPORTER", value_enum, ignore_case = true, default_value_t = TracesExporter::Otlp)]
    pub exporter: TracesExporter,

    /// `true` turns every OpenTelemetry signal off, whatever else is set.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-sdk-disabled", env = "OTEL_SDK_DISABLED", value_name = "true|false",
          action = clap::ArgAction::Set, default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub sdk_disabled: bool,

    /// The `service.name` of every span [default: items-api, unless OTEL_RESOURCE_ATTRIBUTES names one].
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-service-name", env = "OTEL_SERVICE_NAME", value_name = "NAME",
          default_value = "", hide_default_value = true, value_parser = or_unset(|name: &str| Ok(name.trim().to_owned())))]
    pub service_name: OrUnset<String>,

    /// Which traces are kept: a caller's decision is followed (`parentbased_*`), else all
    /// (`always_on`), none (`always_off`) or a share of them (`traceidratio`, OTEL_TRACES_SAMPLER_ARG).
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-traces-sampler", env = "OTEL_TRACES_SAMPLER",
          value_name = "OTEL_TRACES_SAMPLER", value_enum, ignore_case = true, default_value_t = TraceSampler::ParentbasedAlwaysOn)]
    pub sampler: TraceSampler,

    /// The share of traces `traceidratio` samplers keep, 0 to 1 [default: 1].
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-traces-sampler-arg", env = "OTEL_TRACES_SAMPLER_ARG", value_name = "RATIO",
          default_value = "", hide_default_value = true, value_parser = or_unset(parse_ratio))]
    pub sampler_arg: OrUnset<f64>,

    /// Milliseconds between two exports of the spans queued meanwhile.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-bsp-schedule-delay", env = "OTEL_BSP_SCHEDULE_DELAY", value_name = "MS",
          default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub schedule_delay_ms: u64,

    /// Spans queued for export at most; more are dropped (and counted by the SDK) rather than
    /// held in memory while a receiver is slow or down.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-bsp-max-queue-size", env = "OTEL_BSP_MAX_QUEUE_SIZE", value_name = "SPANS",
          default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_queue_size: u64,

    /// Spans sent in one export at most (at most OTEL_BSP_MAX_QUEUE_SIZE).
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-bsp-max-export-batch-size", env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", value_name = "SPANS",
          default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_export_batch_size: u64,

    /// Milliseconds one export may take before its spans are given up.
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-timeout", env = "OTEL_EXPORTER_OTLP_TIMEOUT", value_name = "MS",
          default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,

    /// The same for traces alone (overrides OTEL_EXPORTER_OTLP_TIMEOUT).
    #[arg(help_heading = "Traces (OpenTelemetry)", long = "otel-exporter-otlp-traces-timeout", env = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value_name = "MS",
          default_value = "", hide_default_value = true,
          value_parser = or_unset(parse_millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")))]
    pub traces_timeout_ms: OrUnset<u64>,
}

/// A value, or none: an empty value means unset, as the OpenTelemetry specification says, so a
/// Compose file can pass `${OTEL_...:-}` on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrUnset<T>(pub Option<T>);

fn or_unset<T, F>(parse: F) -> impl Fn(&str) -> Result<OrUnset<T>, String> + Clone
where
    F: Fn(&str) -> Result<T, String> + Clone,
{
    move |value: &str| {
        if value.trim().is_empty() {
            Ok(OrUnset(None))
        } else {
            parse(value).map(|parsed| OrUnset(Some(parsed)))
        }
    }
}

fn parse_millis(setting: &'static str) -> impl Fn(&str) -> Result<u64, String> + Clone {
    move |value: &str| {
        value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=600_000).contains(ms))
            .ok_or_else(|| format!("{setting} must be 1 to 600000 milliseconds, not {value:?}"))
    }
}

/// An OTLP receiver's URL, or none (an empty value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtlpEndpoint(pub Option<String>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    HttpProtobuf,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TracesExporter {
    Otlp,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

/// Where and how traces go, when they are recorded at all.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// The URL the exporter sends to, as it will use it.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// How long one export may take.
    pub timeout: Duration,
}

impl TraceConfig {
    /// Where traces go; `None` when none are recorded (no endpoint, `OTEL_TRACES_EXPORTER=none`
    /// or `OTEL_SDK_DISABLED=true`).
    pub fn export(&self) -> Option<TraceExport> {
        if self.sdk_disabled || self.exporter == TracesExporter::None {
            return None;
        }
        let protocol = self
            .traces_protocol
            .0
            .or(self.protocol.0)
            .unwrap_or(OtlpProtocol::HttpProtobuf);
        let endpoint = match (&self.traces_endpoint.0, &self.endpoint.0) {
            (Some(traces), _) => traces.clone(),
            (None, Some(base)) => match protocol {
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base.clone(),
            },
            (None, None) => return None,
        };
        let timeout = Duration::from_millis(self.traces_timeout_ms.0.unwrap_or(self.timeout_ms));
        Some(TraceExport {
            endpoint,
            protocol,
            timeout,
        })
    }
}

fn parse_otlp_endpoint(
    setting: &'static str,
) -> impl Fn(&str) -> Result<OtlpEndpoint, String> + Clone {
    move |value: &str| {
        let value = value.trim();
        if value.is_empty() {
            return Ok(OtlpEndpoint(None));
        }
        let url = url::Url::parse(value)
            .map_err(|error| format!("{setting} must be an http:// or https:// URL: {error}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{setting} must be an http:// or https:// URL with a host, not {value:?}"
            ));
        }
        Ok(OtlpEndpoint(Some(value.to_owned())))
    }
}

fn parse_otlp_protocol(
    setting: &'static str,
) -> impl Fn(&str) -> Result<OtlpProtocol, String> + Clone {
    move |value: &str| match value.trim() {
        "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
        "grpc" => Ok(OtlpProtocol::Grpc),
        other => Err(format!(
            "{setting}={other:?} is not supported: use http/protobuf or grpc"
        )),
    }
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .ok_or_else(|| {
            format!("OTEL_TRACES_SAMPLER_ARG must be a number from 0 to 1, not {value:?}")
        })
}

impl Cli {
    /// Reads the command line and the environment. `--version` prints the version `/api/health`
    /// reports: `BUILD_VERSION` from the environment when set (an image sets it at run time),
    /// else the one baked in at build time.
    pub fn from_env_and_args() -> Result<Self, clap::Error> {
        let version = std::env::var("BUILD_VERSION").unwrap_or_default();
        Self::parse_with_version(std::env::args_os(), &version)
    }

    fn parse_with_version<I, T>(args: I, version: &str) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let version = if version.is_empty() {
            build::VERSION
        } else {
            version
        };
        let mut command = Self::command().version(version.to_owned());
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        let config = &cli.config;
        if config.traces.max_export_batch_size > config.traces.max_queue_size {
            return Err(command.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE ({}) must not be above OTEL_BSP_MAX_QUEUE_SIZE ({})",
                    config.traces.max_export_batch_size, config.traces.max_queue_size
                ),
            ));
        }
        if let Err(LocationError(message)) = config.store_settings() {
            return Err(command.error(clap::error::ErrorKind::ValueValidation, message));
        }
        if let Some(Command::Transfer { from, to }) = &cli.command {
            for (name, value) in [("--from", from), ("--to", to)] {
                if let Err(LocationError(message)) = config.transfer_location(value, name) {
                    return Err(command.error(clap::error::ErrorKind::ValueValidation, message));
                }
            }
        }
        if config.database_statement_timeout_ms >= config.request_timeout_secs * 1000 {
            // Otherwise a slow statement is cut by the request timeout and never cancelled.
            return Err(command.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "DATABASE_STATEMENT_TIMEOUT_MS ({}) must be less than REQUEST_TIMEOUT_SECS ({}) in milliseconds",
                    config.database_statement_timeout_ms, config.request_timeout_secs
                ),
            ));
        }
        if let Some(streams) = config.max_event_streams
            && streams >= config.max_connections
        {
            // Otherwise open pages could take every connection and leave none for requests.
            return Err(command.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "MAX_EVENT_STREAMS ({streams}) must be less than MAX_CONNECTIONS ({})",
                    config.max_connections
                ),
            ));
        }
        if config.body_timeout_secs >= config.request_timeout_secs {
            // Otherwise the request timeout (503) always fires first and the 408 never does.
            return Err(command.error(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "BODY_TIMEOUT_SECS ({}) must be less than REQUEST_TIMEOUT_SECS ({})",
                    config.body_timeout_secs, config.request_timeout_secs
                ),
            ));
        }
        Ok(cli)
    }
}

impl Config {
    /// Settings for tests and embedding: everything at its default (whatever the environment
    /// says), the database at `db_path`, a free port on loopback.
    pub fn with_defaults(db_path: impl Into<PathBuf>) -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(["items-api"])
            .expect("the defaults are valid settings");
        let mut config = Cli::from_arg_matches(&matches)
            .expect("the defaults are valid settings")
            .config;
        config.db_path = db_path.into();
        config.static_dir = None;
        config.bind_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(match self.app_env {
            AppEnv::Production => LogFormat::Json,
            AppEnv::Development => LogFormat::Pretty,
        })
    }

    /// The page directory, when serving it is on.
    pub fn static_dir(&self) -> Option<&PathBuf> {
        self.static_dir
            .as_ref()
            .filter(|dir| !dir.as_os_str().is_empty())
    }

    /// The database and how to use it. Fails on an unusable `DATABASE_URL` or password file;
    /// the message names the setting and never contains a password.
    pub fn store_settings(&self) -> Result<StoreSettings, LocationError> {
        let location =
            Location::from_settings(&self.database_url.0, &self.db_path, &self.sign_in()?)?;
        let listen = match (&location, self.database_listen_url.0.as_str()) {
            (_, "") => None,
            (Location::Postgres(_), url) => {
                match self.transfer_location(&self.database_listen_url, "DATABASE_LISTEN_URL")? {
                    Location::Postgres(target) => Some(*target),
                    Location::Sqlite(_) => {
                        return Err(LocationError(format!(
                            "DATABASE_LISTEN_URL must be a postgres:// URL (got {})",
                            url.split("://").next().unwrap_or_default()
                        )));
                    }
                }
            }
            (Location::Sqlite(_), _) => {
                return Err(LocationError(
                    "DATABASE_LISTEN_URL is for Postgres, but DATABASE_URL names SQLite; unset it"
                        .into(),
                ));
            }
        };
        Ok(StoreSettings {
            location,
            listen,
            sqlite: self.sqlite(),
            postgres: self.postgres(),
        })
    }

    /// One side of `transfer`: a path or a URL; `DATABASE_PASSWORD_FILE` applies to a Postgres
    /// URL without a password.
    pub fn transfer_location(
        &self,
        value: &DatabaseUrl,
        setting: &str,
    ) -> Result<Location, LocationError> {
        Location::parse(&value.0, setting, &self.sign_in()?)
    }

    /// How Postgres connections sign in when their URL has no password.
    fn sign_in(&self) -> Result<SignIn, LocationError> {
        match self.database_auth {
            DatabaseAuth::Password => Ok(SignIn::Password {
                file: self.database_password_file.clone(),
            }),
            DatabaseAuth::AzureManagedIdentity => {
                let (Some(endpoint), Some(secret)) =
                    (&self.identity_endpoint, &self.identity_header)
                else {
                    return Err(LocationError(
                        "DATABASE_AUTH=azure-managed-identity needs IDENTITY_ENDPOINT and \
                         IDENTITY_HEADER, which Azure Container Apps sets for an app with a \
                         managed identity"
                            .into(),
                    ));
                };
                Ok(SignIn::ManagedIdentity {
                    endpoint: endpoint.clone(),
                    secret: secret.clone(),
                    client_id: self.azure_client_id.clone(),
                })
            }
            DatabaseAuth::AzureWorkloadIdentity => {
                let needs = |name: &str| {
                    LocationError(format!(
                        "DATABASE_AUTH=azure-workload-identity needs {name}, which the AKS workload \
                         identity webhook sets in a pod labelled azure.workload.identity/use=true \
                         whose service account names a client id"
                    ))
                };
                let tenant = self.azure_tenant_id.as_deref().unwrap_or_default();
                let client = self.azure_client_id.as_deref().unwrap_or_default();
                let file = self.azure_federated_token_file.as_deref();
                if client.is_empty() {
                    return Err(needs("AZURE_CLIENT_ID"));
                }
                if tenant.is_empty() {
                    return Err(needs("AZURE_TENANT_ID"));
                }
                let Some(file) = file.filter(|file| !file.as_os_str().is_empty()) else {
                    return Err(needs("AZURE_FEDERATED_TOKEN_FILE"));
                };
                Ok(SignIn::WorkloadIdentity {
                    authority_host: self.azure_authority_host.clone(),
                    tenant_id: tenant.to_owned(),
                    client_id: client.to_owned(),
                    token_file: file.to_path_buf(),
                })
            }
        }
    }

    pub fn sqlite(&self) -> SqliteOptions {
        SqliteOptions {
            journal_mode: self.sqlite_journal_mode,
            synchronous: self.sqlite_synchronous,
            busy_timeout: Duration::from_millis(self.sqlite_busy_timeout_ms),
            read_connections: usize::try_from(self.db_read_connections).unwrap_or(usize::MAX),
            migrate_on_start: self.migrate_on_start.unwrap_or(true),
        }
    }

    pub fn postgres(&self) -> PoolOptions {
        PoolOptions {
            size: usize::try_from(self.database_pool_size).unwrap_or(usize::MAX),
            wait_timeout: Duration::from_millis(self.database_pool_timeout_ms),
            connect_timeout: Duration::from_millis(self.database_connect_timeout_ms),
            statement_timeout: Duration::from_millis(self.database_statement_timeout_ms),
            migrate_on_start: self.migrate_on_start.unwrap_or(false),
        }
    }

    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX)
    }

    pub fn max_text_chars(&self) -> usize {
        usize::try_from(self.max_text_chars).unwrap_or(usize::MAX)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.keepalive_timeout_secs)
    }

    /// As configured; `Application::build` lowers it to the process's open-file limit.
    pub fn max_connections(&self) -> usize {
        usize::try_from(self.max_connections).unwrap_or(usize::MAX)
    }

    /// Change streams served at once, given the connection limit in force: as set when that is
    /// below the limit, else half of it, so requests and health checks always find a connection.
    pub fn max_event_streams(&self, connections: usize) -> usize {
        match self.max_event_streams.map(usize::try_from) {
            Some(Ok(streams)) if streams < connections => streams,
            _ => connections / 2,
        }
    }

    pub fn max_header_bytes(&self) -> usize {
        usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    pub fn event_heartbeat(&self) -> Duration {
        Duration::from_secs(self.event_heartbeat_secs)
    }

    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_secs(self.shutdown_drain_secs)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// `DATABASE_URL` as given. It may hold a password, so it is never shown: not in `--help`, not in
/// debug output, and not in error messages (which describe what is wrong instead).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<hidden>\""
        })
    }
}

/// Always accepted here: clap would quote a refused value in its error. It is checked after
/// parsing, by `Config::store_settings`.
fn parse_database_url(value: &str) -> Result<DatabaseUrl, String> {
    Ok(DatabaseUrl(value.to_owned()))
}

/// IP:PORT as it is, or HOST:PORT resolved now (`localhost` is loopback over IPv4, as browsers and
/// curl try it first).
fn parse_bind_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "{value:?} has no port: write IP:PORT or HOST:PORT, e.g. 127.0.0.1:8080 or \
             localhost:8080 (0.0.0.0:8000 to listen on every interface)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port (0 to 65535) in {value:?}"))?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    use std::net::ToSocketAddrs;
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|error| format!("cannot resolve {host:?} in {value:?}: {error}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{host:?} in {value:?} resolves to no address"))
}

/// An address, or none (an empty value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

fn parse_optional_addr(value: &str) -> Result<MaybeAddr, String> {
    if value.is_empty() {
        return Ok(MaybeAddr(None));
    }
    parse_bind_addr(value).map(|addr| MaybeAddr(Some(addr)))
}

/// An empty value (e.g. `BUILD_VERSION=` from an unset build argument) means the baked-in one.
fn or_default(fallback: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |value: &str| Ok(if value.is_empty() { fallback } else { value }.to_owned())
}

fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value)
        .map(|_| value.to_owned())
        .map_err(|error| format!("not a valid log filter: {error}"))
}

/// An empty value turns serving the page off (an empty path, filtered out by `Config::static_dir`).
fn parse_static_dir(value: &str) -> Result<PathBuf, String> {
    let dir = PathBuf::from(value);
    if value.is_empty() {
        return Ok(dir);
    }
    if !dir.join("index.html").is_file() {
        return Err(format!("{} has no index.html", dir.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("items-api").chain(args.iter().copied()))
    }

    #[test]
    fn version_flag_shows_the_run_time_build_version_else_the_baked_in_one() {
        for (set, shown) in [("7.8.9-rc1", "7.8.9-rc1"), ("", build::VERSION)] {
            let error = Cli::parse_with_version(["items-api", "--version"], set).unwrap_err();
            assert_eq!(error.kind(), clap::error::ErrorKind::DisplayVersion);
            assert_eq!(error.render().to_string(), format!("items-api {shown}\n"));
        }
    }

    fn trace_export(args: &[&str]) -> Option<TraceExport> {
        parse(args).unwrap().config.traces.export()
    }

    #[test]
    fn traces_go_where_the_otlp_variables_say_and_nowhere_without_an_endpoint() {
        let base = ["--otel-exporter-otlp-endpoint", "http://collector:4318/"];
        let export = trace_export(&base).unwrap();
        assert_eq!(export.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(export.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(export.timeout, Duration::from_secs(10));
        let grpc = [&base[..], &["--otel-exporter-otlp-protocol", "grpc"]].concat();
        assert_eq!(
            trace_export(&grpc).unwrap().endpoint,
            "http://collector:4318/"
        );
        let own = [
            &base[..],
            &[
                "--otel-exporter-otlp-traces-endpoint",
                "https://traces.example/ingest",
            ],
            &["--otel-exporter-otlp-traces-protocol", "grpc"],
            &["--otel-exporter-otlp-traces-timeout", "2500"],
        ]
        .concat();
        let export = trace_export(&own).unwrap();
        assert_eq!(export.endpoint, "https://traces.example/ingest");
        assert_eq!(export.protocol, OtlpProtocol::Grpc);
        assert_eq!(export.timeout, Duration::from_millis(2500));
        assert_eq!(trace_export(&[]), None);
        for off in [
            &["--otel-traces-exporter", "none"][..],
            &["--otel-sdk-disabled", "true"][..],
        ] {
            assert_eq!(trace_export(&[&base[..], off].concat()), None, "{off:?}");
        }
    }

    #[test]
    fn an_empty_otel_value_means_unset() {
        let empty = [
            "--otel-exporter-otlp-endpoint",
            "",
            "--otel-exporter-otlp-protocol",
            "",
            "--otel-service-name",
            "",
            "--otel-traces-sampler-arg",
            "",
            "--otel-exporter-otlp-traces-timeout",
            "",
        ];
        let traces = parse(&empty).unwrap().config.traces;
        assert_eq!(traces.export(), None);
        assert_eq!(traces.protocol, OrUnset(None));
        assert_eq!(traces.service_name, OrUnset(None));
        assert_eq!(traces.sampler_arg, OrUnset(None));
        assert_eq!(traces.traces_timeout_ms, OrUnset(None));
    }

    #[test]
    fn an_export_batch_larger_than_the_queue_is_refused() {
        let error = Cli::parse_with_version(
            [
                "items-api",
                "--otel-bsp-max-queue-size",
                "100",
                "--otel-bsp-max-export-batch-size",
                "200",
            ],
            "",
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
            "{error}"
        );
    }

    #[test]
    fn the_body_timeout_must_be_shorter_than_the_request_timeout() {
        let args = |body: &str, request: &str| {
            Cli::parse_with_version(
                [
                    "items-api",
                    "--body-timeout-secs",
                    body,
                    "--request-timeout-secs",
                    request,
                ],
                "",
            )
        };
        let error = args("30", "30").unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            error
                .to_string()
                .contains("BODY_TIMEOUT_SECS (30) must be less than REQUEST_TIMEOUT_SECS (30)"),
            "{error}"
        );
        assert_eq!(args("29", "30").unwrap().config.body_timeout_secs, 29);
    }

    #[test]
    fn event_streams_leave_room_in_the_connection_limit_in_force() {
        let default = parse(&[]).unwrap().config;
        assert_eq!(default.max_event_streams(10_000), 5000);
        assert_eq!(
            default.max_event_streams(896),
            448,
            "lowered with the connections"
        );
        let set = parse(&["--max-event-streams", "1000"]).unwrap().config;
        assert_eq!(set.max_event_streams(10_000), 1000);
        assert_eq!(set.max_event_streams(1001), 1000);
        assert_eq!(
            set.max_event_streams(1000),
            500,
            "not at the limit: half of it"
        );
        assert_eq!(set.max_event_streams(896), 448);
        assert_eq!(
            set.max_event_streams(1),
            0,
            "the one connection is for requests"
        );
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_serve_locally_on_port_8000_with_a_local_database() {
        let cli = parse(&[]).unwrap();
        assert_eq!(cli.config.bind_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(cli.config.db_path, PathBuf::from("./data/app.db"));
        assert_eq!(cli.config.max_body_bytes, 1_048_576);
        assert_eq!(cli.config.sqlite_journal_mode, JournalMode::Wal);
        assert!(cli.command.is_none());
    }

    #[test]
    fn log_format_follows_the_environment_unless_set() {
        let production = parse(&["--app-env", "production"]).unwrap().config;
        assert_eq!(production.log_format(), LogFormat::Json);
        let development = parse(&[]).unwrap().config;
        assert_eq!(development.log_format(), LogFormat::Pretty);
        let forced = parse(&["--app-env", "production", "--log-format", "pretty"]).unwrap();
        assert_eq!(forced.config.log_format(), LogFormat::Pretty);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--bind-addr", "localhost"][..],
            &["--bind-addr", "localhost:99999"],
            &["--bind-addr", "no-such-host.invalid:8000"],
            &["--max-body-bytes", "lots"],
            &["--max-body-bytes", "0"],
            &["--app-env", "staging"],
            &["--sqlite-journal-mode", "memory"],
            &["--log-filter", "info,=="],
            &["--static-dir", "/definitely/not/here"],
            &["--max-header-bytes", "8191"],
            &["--send-timeout-secs", "0"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn the_bind_address_may_name_a_host() {
        let local = parse(&["--bind-addr", "localhost:18501"]).unwrap().config;
        assert_eq!(local.bind_addr.to_string(), "127.0.0.1:18501");
        let ip = parse(&["--bind-addr", "0.0.0.0:8000"]).unwrap().config;
        assert_eq!(ip.bind_addr.to_string(), "0.0.0.0:8000");
        let error = parse(&["--bind-addr", "localhost"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("write IP:PORT or HOST:PORT"), "{error}");
    }

    #[test]
    fn empty_build_metadata_falls_back_to_the_baked_in_values() {
        let config = parse(&["--build-version", "", "--vcs-ref", ""])
            .unwrap()
            .config;
        assert_eq!(config.build_version, build::VERSION);
        assert_eq!(config.vcs_ref, build::VCS_REF);
    }

    #[test]
    fn choices_are_case_insensitive() {
        let config = parse(&["--sqlite-journal-mode", "DELETE", "--app-env", "Production"])
            .unwrap()
            .config;
        assert_eq!(config.sqlite_journal_mode, JournalMode::Delete);
        assert_eq!(config.app_env, AppEnv::Production);
    }

    #[test]
    fn an_empty_static_dir_turns_the_page_off() {
        let config = parse(&["--static-dir", ""]).unwrap().config;
        assert_eq!(config.static_dir(), None);
    }

    #[test]
    fn subcommands_take_their_file_argument() {
        let cli = parse(&["backup", "/tmp/b.db"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Backup { file }) if file == Path::new("/tmp/b.db"))
        );
    }
}
