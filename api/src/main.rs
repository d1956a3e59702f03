//! Entry point: parse settings, then serve or run one maintenance command.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::error::ErrorKind;
use items_api::maintenance::{self, AppRole, RoleCreation, transfer};
use items_api::ops::{healthcheck, telemetry, traces};
use items_api::store::StoreSettings;
use items_api::{Application, Cli, Command, Config, startup};

fn main() -> ExitCode {
    let cli = match Cli::from_env_and_args() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    let config = cli.config;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&config),
        Command::Healthcheck { timeout_ms } => {
            check_health(&config, Duration::from_millis(timeout_ms))
        }
        Command::Backup { file } => with_database(&config, async |settings| {
            let copy = maintenance::backup(&settings.location, &file).await?;
            Ok(format!(
                "backup: {} items ({} bytes) written to {}",
                copy.items,
                copy.bytes,
                file.display()
            ))
        }),
        Command::Restore { file } => with_database(&config, async |settings| {
            let copy = maintenance::restore(&settings.location, &file).await?;
            Ok(format!(
                "restore: {} now holds {} items ({} bytes) from {}",
                settings.location,
                copy.items,
                copy.bytes,
                file.display()
            ))
        }),
        Command::Migrate {
            app_role,
            app_role_password_file,
            app_role_entra_object_id,
        } => {
            let app_role =
                match app_role_to_grant(app_role, app_role_password_file, app_role_entra_object_id)
                {
                    Ok(role) => role,
                    Err(error) => return fail(&error),
                };
            with_database(&config, async |settings| {
                let report = maintenance::migrate(&settings, app_role.as_ref()).await?;
                let granted = app_role
                    .as_ref()
                    .map(|role| format!("; {} may serve", role.name))
                    .unwrap_or_default();
                Ok(if report.from == report.to {
                    format!(
                        "migrate: {} already at schema version {}{granted}",
                        settings.location, report.to
                    )
                } else {
                    format!(
                        "migrate: {} from schema version {} to {}{granted}",
                        settings.location, report.from, report.to
                    )
                })
            })
        }
        Command::Transfer { from, to } => {
            let locations = config
                .transfer_location(&from, "--from")
                .and_then(|from| Ok((from, config.transfer_location(&to, "--to")?)));
            let (from, to) = match locations {
                Ok(locations) => locations,
                Err(error) => return fail(&error.0),
            };
            run(async move {
                let report = transfer::transfer(&from, &to, print_progress).await?;
                Ok::<_, transfer::TransferError>(format!(
                    "transfer: {} items copied from {from} to {to} in {:.1}s, with {} idempotency \
                     keys; next id above {}; verified: same count and SHA-256 {} on both sides",
                    report.items,
                    report.elapsed.as_secs_f64(),
                    report.keys,
                    report.highest_id_ever,
                    report.checksum
                ))
            })
        }
    }
}

/// Runs a maintenance command against the configured database.
fn with_database(
    config: &Config,
    command: impl AsyncFnOnce(StoreSettings) -> Result<String, String>,
) -> ExitCode {
    match config.store_settings() {
        Ok(settings) => run(command(settings)),
        Err(error) => fail(&error.0),
    }
}

/// The role `migrate` grants the serving rights to, and how to create it.
fn app_role_to_grant(
    name: Option<String>,
    password_file: Option<std::path::PathBuf>,
    entra_object_id: Option<String>,
) -> Result<Option<AppRole>, String> {
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        return Ok(None);
    };
    let create = match (password_file, entra_object_id) {
        (Some(file), _) => {
            let password = std::fs::read_to_string(&file).map_err(|error| {
                format!("MIGRATE_APP_ROLE_PASSWORD_FILE {}: {error}", file.display())
            })?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(format!(
                    "MIGRATE_APP_ROLE_PASSWORD_FILE {} is empty",
                    file.display()
                ));
            }
            RoleCreation::Password(password.to_owned())
        }
        (None, Some(object_id)) => RoleCreation::EntraObjectId(object_id),
        (None, None) => RoleCreation::Existing,
    };
    Ok(Some(AppRole { name, create }))
}

/// Runs a command to completion on a single-threaded runtime and reports its outcome.
fn run<E: std::fmt::Display>(command: impl Future<Output = Result<String, E>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    match runtime.block_on(command) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

/// At most one progress line a second (and the last one), on stderr so stdout stays the result.
fn print_progress(progress: transfer::Progress) {
    use std::sync::Mutex;
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let finished = progress.copied >= progress.total;
    if finished || last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        let percent = (progress.copied * 100)
            .checked_div(progress.total)
            .unwrap_or(100);
        eprintln!(
            "transfer: {} of {} items ({percent}%)",
            progress.copied, progress.total
        );
        *last = Some(Instant::now());
    }
}

/// `--help`/`--version` print and succeed; a bad setting prints one line naming it and exits 2.
fn usage_error(error: &clap::Error) -> ExitCode {
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return ExitCode::SUCCESS;
    }
    // clap's first paragraph says what is wrong and, where it helps, what is possible (missing
    // argument names, valid values); the usage lines after it are left out to keep one line.
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = if message.is_empty() {
        "error: invalid arguments".to_owned()
    } else {
        message.join(" ")
    };
    eprintln!("{message} (see `items-api --help`)");
    ExitCode::from(2)
}

fn serve(config: &Config) -> ExitCode {
    // With one CPU (a pinned process, or a container limited to one core) a single-threaded
    // scheduler does the same work without the cross-thread bookkeeping of a work-stealing one.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    // The exporter runs on the runtime: it is built inside it.
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let service = traces::ServiceIdentity {
        version: &config.build_version,
        instance: &hostname,
    };
    let exporting = match runtime.block_on(async { traces::start(&config.traces, &service) }) {
        Ok(exporting) => exporting,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let tracer = exporting
        .as_ref()
        .map(|provider| opentelemetry::trace::TracerProvider::tracer(provider, "items-api"));
    let log = telemetry::init(config.log_format(), &config.log_filter, tracer);
    let outcome = runtime.block_on(async {
        let application = match Application::build(config).await {
            Ok(application) => application,
            Err(error) => {
                tracing::error!(%error, "cannot start");
                let code = if error.is_setting() { 2 } else { 1 };
                return Err((error.to_string(), code));
            }
        };
        application
            .run_until_stopped(startup::shutdown_signal())
            .await
            .map_err(|error| {
                tracing::error!(%error, "server error");
                (format!("server error: {error}"), 1)
            })
    });
    if let Some(provider) = exporting {
        // Exports run on the runtime, so it keeps going while the queue is flushed.
        let timeout = config
            .traces
            .export()
            .map_or(Duration::ZERO, |export| export.timeout);
        runtime.block_on(async {
            let _ =
                tokio::task::spawn_blocking(move || traces::shut_down(&provider, timeout)).await;
        });
    }
    // Every log line is written before the last word, which says why the process ends.
    drop(log);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

fn check_health(config: &Config, timeout: Duration) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}")),
    };
    let target = healthcheck::local_target(config.bind_addr);
    match runtime.block_on(healthcheck::probe(target, timeout)) {
        Ok(()) => {
            println!("healthy: http://{target}{}", healthcheck::PATH);
            ExitCode::SUCCESS
        }
        Err(reason) => fail(&format!("unhealthy: {reason}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
