//! `Application`: open the store, bind the port, serve until told to stop, then shut down cleanly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use std::sync::atomic::Ordering;

use crate::config::{AppEnv, Config};
use crate::http::{AppState, BodyLimits, EventStreams, RouterOptions, ServiceInfo, app, server};
use crate::ops;
use crate::store::{self, ItemStore, LocationError, OpenError};

/// Why the service could not start. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] LocationError),
    #[error(transparent)]
    Database(#[from] OpenError),
    #[error("{0}")]
    Metrics(String),
    #[error("cannot listen on {addr}: {cause}{hint}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
        hint: &'static str,
    },
}

impl StartupError {
    fn bind(addr: SocketAddr, cause: std::io::Error) -> Self {
        let hint = match cause.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process uses this port; stop it or set BIND_ADDR)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (ports below 1024 need privileges; set BIND_ADDR)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (no local interface has this address; set BIND_ADDR)"
            }
            _ => "",
        };
        Self::Bind { addr, cause, hint }
    }

    /// A setting must change (exit 2, as for a bad value), rather than something gone wrong
    /// while running (exit 1).
    pub fn is_setting(&self) -> bool {
        match self {
            Self::Settings(_) | Self::Bind { .. } => true,
            Self::Metrics(_) => false,
            Self::Database(error) => error.is_setting(),
        }
    }
}

pub struct Application {
    listener: TcpListener,
    /// With METRICS_ADDR: its listener and the recorder's handle.
    metrics: Option<Metrics>,
    router: Router,
    store: Arc<dyn ItemStore>,
    info: Arc<ServiceInfo>,
    limits: server::Limits,
    shutdown_drain: Duration,
    shutdown_timeout: Duration,
    stopping: CancellationToken,
    backend: &'static str,
}

struct Metrics {
    listener: TcpListener,
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

impl Application {
    /// Binds the listener (port 0 picks a free port), then opens and migrates the database (see
    /// `store::open`): a port in use stops the start before the database is touched.
    pub async fn build(config: &Config) -> Result<Self, StartupError> {
        let settings = config.store_settings()?;
        let listener = TcpListener::bind(config.bind_addr)
            .await
            .map_err(|cause| StartupError::bind(config.bind_addr, cause))?;
        let metrics = match config.metrics_addr.0 {
            Some(addr) => Some(Metrics {
                listener: TcpListener::bind(addr)
                    .await
                    .map_err(|cause| StartupError::bind(addr, cause))?,
                handle: ops::metrics::install().map_err(StartupError::Metrics)?,
            }),
            None => None,
        };
        tracing::info!(backend = settings.location.backend(), database = %settings.location, "opening the database");
        let store = store::open(&settings).await?;
        // Tracing wraps every database call in a span; without it the store is called directly.
        let store = if crate::traces::enabled() {
            store::traced(store, &settings.location)
        } else {
            store
        };
        let body_limits = BodyLimits {
            max_bytes: config.max_body_bytes(),
            timeout: config.body_timeout(),
            max_text_chars: config.max_text_chars(),
        };
        let limits = server::Limits {
            header_read_timeout: config.header_read_timeout(),
            keepalive_timeout: config.keepalive_timeout(),
            send_timeout: config.send_timeout(),
            max_connections: config.max_connections(),
            max_header_bytes: config.max_header_bytes(),
        }
        .within_open_file_limit();
        let max_event_streams = config.max_event_streams(limits.max_connections);
        if let Some(configured) = config.max_event_streams
            && usize::try_from(configured).ok() != Some(max_event_streams)
        {
            tracing::warn!(
                max_event_streams = configured,
                max_connections = limits.max_connections,
                using = max_event_streams,
                "MAX_EVENT_STREAMS is not below the connection limit in force (lowered to fit \
                 the open-file limit); streams get half of it, so requests keep the rest"
            );
        }
        // Cancelled when serving stops: ends the event streams, which would otherwise keep
        // their connections open through the whole grace period.
        let stopping = CancellationToken::new();
        let event_streams = EventStreams::new(
            max_event_streams,
            config.event_heartbeat(),
            stopping.clone(),
        );
        let state = AppState::new(
            Arc::clone(&store),
            service_info(config),
            body_limits,
            event_streams,
        );
        let info = Arc::clone(&state.info);
        let options = RouterOptions {
            request_timeout: config.request_timeout(),
            static_dir: config.static_dir().cloned(),
        };
        metrics::gauge!(crate::metrics::STREAMS_LIMIT).set(max_event_streams as f64);
        Ok(Self {
            listener,
            metrics,
            backend: settings.location.backend(),
            router: app(state, options),
            store,
            info,
            limits,
            shutdown_drain: config.shutdown_drain(),
            shutdown_timeout: config.shutdown_timeout(),
            stopping,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Where `/metrics` is served, with `METRICS_ADDR`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|metrics| metrics.listener.local_addr().ok())
    }

    /// Serves until `shutdown` completes; then fails readiness while still serving for
    /// `SHUTDOWN_DRAIN_SECS`; then stops accepting, gives in-flight requests up to
    /// `SHUTDOWN_TIMEOUT_SECS` to finish, and closes the store (pending writes committed, WAL
    /// checkpointed).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping.clone();
        let trigger = stopping.clone();
        let (info, drain) = (Arc::clone(&self.info), self.shutdown_drain);
        tokio::spawn(async move {
            shutdown.await;
            info.stopping.store(true, Ordering::Release);
            if !drain.is_zero() {
                tracing::info!(
                    drain_seconds = drain.as_secs(),
                    "stopping: readiness fails, still serving"
                );
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: no new connections; finishing in-flight requests");
            trigger.cancel();
        });
        tracing::info!(addr = %self.local_addr(), "listening");
        let metrics = self.metrics.map(|metrics| {
            if let Ok(addr) = metrics.listener.local_addr() {
                tracing::info!(%addr, "serving metrics");
            }
            let build = ops::metrics::BuildInfo {
                version: self.info.version.clone(),
                vcs_ref: self.info.vcs_ref.clone(),
                backend: self.backend,
            };
            tokio::spawn(ops::metrics::serve(
                metrics.listener,
                metrics.handle,
                Arc::clone(&self.store),
                build,
                stopping.clone(),
            ))
        });
        let grace = self.shutdown_timeout;
        let finished =
            server::serve(self.listener, self.router, self.limits, stopping, grace).await;
        if !finished {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "requests still running after the grace period; closing them"
            );
        }
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What `/api/health` reports about this process.
fn service_info(config: &Config) -> ServiceInfo {
    ServiceInfo {
        version: config.build_version.clone(),
        build_date: config.build_date.clone(),
        vcs_ref: config.vcs_ref.clone(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        environment: match config.app_env {
            AppEnv::Development => "development",
            AppEnv::Production => "production",
        }
        .to_owned(),
        started: std::time::Instant::now(),
        stopping: std::sync::atomic::AtomicBool::new(false),
    }
}

/// Completes on SIGTERM (docker stop, Kubernetes, Container Apps) or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => tracing::info!(signal = "SIGINT", "stop requested"),
        () = terminate => tracing::info!(signal = "SIGTERM", "stop requested"),
    }
}
