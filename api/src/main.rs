//! Entry point: parse settings, then serve or run one maintenance command.

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use items_api::store::backup;
use items_api::{Application, Cli, Command, Config, healthcheck, startup, telemetry};

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
        Command::Backup { file } => report(backup::backup(&config.db_path, &file), |copy| {
            format!(
                "backup: {} items ({} bytes) written to {}",
                copy.items,
                copy.bytes,
                file.display()
            )
        }),
        Command::Restore { file } => report(backup::restore(&file, &config.db_path), |copy| {
            format!(
                "restore: {} now holds {} items ({} bytes) from {}",
                config.db_path.display(),
                copy.items,
                copy.bytes,
                file.display()
            )
        }),
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
    // Dropped at the end of this function: the last log lines are flushed before exit.
    let _log = telemetry::init(config.log_format(), &config.log_filter);
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
    runtime.block_on(async {
        let application = match Application::build(config).await {
            Ok(application) => application,
            Err(error) => return fail(&error.to_string()),
        };
        match application
            .run_until_stopped(startup::shutdown_signal())
            .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&format!("server error: {error}")),
        }
    })
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

fn report<T, E: std::fmt::Display>(
    result: Result<T, E>,
    success: impl FnOnce(&T) -> String,
) -> ExitCode {
    match result {
        Ok(value) => {
            println!("{}", success(&value));
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
