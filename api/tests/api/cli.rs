//! The binary's commands and start-up errors: healthcheck, backup, restore, bad settings.

use std::time::Duration;

use crate::helpers::{BinaryServer, run_binary, setting_variables};

#[test]
fn healthcheck_exits_zero_when_the_service_answers() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    let bind = server.addr.to_string();
    let (code, stdout, stderr) = run_binary(&["healthcheck"], &[("BIND_ADDR", &bind)]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("healthy"));
}

#[test]
fn healthcheck_probes_loopback_for_a_wildcard_bind() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    let bind = format!("0.0.0.0:{}", server.addr.port());
    let (code, _, stderr) = run_binary(&["healthcheck"], &[("BIND_ADDR", &bind)]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn healthcheck_exits_one_when_nothing_answers() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = run_binary(&["healthcheck"], &[("BIND_ADDR", &free.to_string())]);
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: unhealthy"), "{stderr}");
}

#[tokio::test]
async fn backup_copies_a_live_database_and_restore_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let db = db_path.to_str().unwrap();
    let server = BinaryServer::start(&db_path, &[]);
    let client = reqwest::Client::new();
    for n in 0..20 {
        let response = client
            .post(server.url("/api/items"))
            .json(&serde_json::json!({"text": format!("saved {n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }

    let backup = dir.path().join("backups/app-backup.db");
    let backup_arg = backup.to_str().unwrap();
    let (code, stdout, stderr) = run_binary(&["backup", backup_arg], &[("DB_PATH", db)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("20 items"), "{stdout}");

    // A second backup to the same file is refused, and the first stays intact.
    let (code, _, stderr) = run_binary(&["backup", backup_arg], &[("DB_PATH", db)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("already exists"), "{stderr}");

    // Change the live data, stop the service, restore, and the backup's 20 items are back.
    client
        .post(server.url("/api/items"))
        .json(&serde_json::json!({"text": "after backup"}))
        .send()
        .await
        .unwrap();
    drop(server);
    let (code, stdout, stderr) = run_binary(&["restore", backup_arg], &[("DB_PATH", db)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("20 items"), "{stdout}");

    let server = BinaryServer::start(&db_path, &[]);
    let items: Vec<serde_json::Value> = client
        .get(server.url("/api/items"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(items.len(), 20);
    assert_eq!(items[0]["text"], "saved 19");
}

#[test]
fn restore_is_refused_while_the_service_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let db = db_path.to_str().unwrap();
    let _server = BinaryServer::start(&db_path, &[]);
    let backup = dir.path().join("b.db");
    let (code, _, stderr) = run_binary(&["backup", backup.to_str().unwrap()], &[("DB_PATH", db)]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_binary(&["restore", backup.to_str().unwrap()], &[("DB_PATH", db)]);
    assert_eq!(code, 1);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

/// Starts the service on `db_path` (any free port) and expects it to refuse to start with exit
/// code `code`; returns its stderr, whose last line must be the reason.
fn refused_start_up(db_path: &str, code: i32) -> String {
    let (exit, stdout, stderr) =
        run_binary(&[], &[("DB_PATH", db_path), ("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(exit, code, "{stderr}");
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("error: ")),
        "the reason comes last: {stdout}{stderr}"
    );
    stderr
}

#[test]
fn a_second_service_on_the_same_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let _server = BinaryServer::start(&db_path, &[]);
    let stderr = refused_start_up(db_path.to_str().unwrap(), 1);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}

#[test]
fn backup_of_a_missing_database_fails_clearly_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("absent.db");
    let out = dir.path().join("out.db");
    let (code, _, stderr) = run_binary(
        &["backup", out.to_str().unwrap()],
        &[("DB_PATH", db_path.to_str().unwrap())],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(!db_path.exists() && !out.exists());
}

#[test]
fn restore_refuses_a_file_that_is_not_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not sqlite").unwrap();
    let db_path = dir.path().join("app.db");
    let (code, _, stderr) = run_binary(
        &["restore", junk.to_str().unwrap()],
        &[("DB_PATH", db_path.to_str().unwrap())],
    );
    assert_eq!(code, 1);
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn bad_settings_stop_the_service_with_one_line_naming_the_variable() {
    let cases = [
        ("MAX_BODY_BYTES", "lots"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_TEXT_CHARS", "0"),
        ("BIND_ADDR", "localhost"),
        ("APP_ENV", "staging"),
        ("LOG_FORMAT", "xml"),
        ("SQLITE_JOURNAL_MODE", "memory"),
        ("SQLITE_SYNCHRONOUS", "sometimes"),
        ("STATIC_DIR", "/definitely/missing"),
        ("REQUEST_TIMEOUT_SECS", "-1"),
        ("DB_READ_CONNECTIONS", "0"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "60000"),
        ("DATABASE_URL", "postgres://app@db/items?sslmode=sometimes"),
        ("DATABASE_LISTEN_URL", "postgres://app@db/items"),
        ("MAX_EVENT_STREAMS", "0"),
        ("MAX_EVENT_STREAMS", "10000"),
        ("EVENT_HEARTBEAT_SECS", "0"),
        ("MAX_HEADER_BYTES", "4096"),
        ("SEND_TIMEOUT_SECS", "0"),
        ("METRICS_ADDR", "9464"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "ftp://collector/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
    ];
    for (variable, value) in cases {
        let (code, stdout, stderr) =
            run_binary(&[], &[(variable, value), ("BIND_ADDR_UNUSED", "")]);
        assert_eq!(code, 2, "{variable}={value}: {stdout}{stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{variable}={value}: {stderr}"
        );
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn usage_errors_name_what_is_missing_and_what_is_possible() {
    let (code, _, stderr) = run_binary(&["backup"], &[]);
    assert_eq!(code, 2);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("<FILE>"), "{stderr}");
    let (_, _, stderr) = run_binary(&[], &[("SQLITE_JOURNAL_MODE", "memory")]);
    assert!(
        stderr.contains("wal") && stderr.contains("delete"),
        "{stderr}"
    );
    let (_, _, stderr) = run_binary(&["healthcheck"], &[("HEALTHCHECK_TIMEOUT_MS", "soon")]);
    assert!(stderr.contains("HEALTHCHECK_TIMEOUT_MS"), "{stderr}");
}

#[test]
fn an_unwritable_database_path_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let db_path = file.join("app.db");
    // A setting that cannot work as given: exit 2, as for a bad value.
    let stderr = refused_start_up(db_path.to_str().unwrap(), 2);
    assert!(
        stderr.contains(&format!("{} is a file, not a directory", file.display())),
        "{stderr}"
    );

    let stderr = refused_start_up("/proc/items/app.db", 2);
    assert!(
        stderr.contains("cannot create the database directory"),
        "{stderr}"
    );
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    std::fs::write(&db_path, vec![b'x'; 8192]).unwrap();
    let stderr = refused_start_up(db_path.to_str().unwrap(), 1);
    assert!(stderr.contains("not a database"), "{stderr}");
}

#[test]
fn a_port_in_use_is_a_clear_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (code, _, stderr) = run_binary(
        &[],
        &[("BIND_ADDR", &addr), ("DB_PATH", db.to_str().unwrap())],
    );
    assert_eq!(code, 2, "a setting to change: {stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(
        !db.exists(),
        "the port is checked before the database is touched"
    );
    assert!(
        stderr.contains("another process uses this port"),
        "{stderr}"
    );
}

/// `--help` of the binary and of each command, together.
fn all_help() -> String {
    let mut help = run_binary(&["--help"], &[]).1;
    for command in ["healthcheck", "migrate", "backup", "restore", "transfer"] {
        help.push_str(&run_binary(&[command, "--help"], &[]).1);
    }
    help
}

#[test]
fn help_lists_every_setting_and_command() {
    let (code, stdout, _) = run_binary(&["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["healthcheck", "migrate", "backup", "restore", "transfer"] {
        assert!(
            stdout.contains(command),
            "--help does not mention {command}"
        );
    }
    let help = all_help();
    let variables = setting_variables();
    assert!(variables.len() >= 26, "{variables:?}");
    for name in variables {
        assert!(
            help.contains(&format!("[env: {name}")),
            "no --help mentions {name}"
        );
    }
}

#[test]
fn help_never_shows_the_value_of_a_database_url() {
    let secret = "postgres://app:hunter2@db/items";
    for (command, variable) in [("--help", "DATABASE_URL"), ("transfer", "TRANSFER_FROM")] {
        let args: &[&str] = if command == "--help" {
            &["--help"]
        } else {
            &[command, "--help"]
        };
        let (_, stdout, _) = run_binary(args, &[(variable, secret)]);
        assert!(stdout.contains(&format!("[env: {variable}]")), "{stdout}");
        assert!(!stdout.contains("hunter2"), "{stdout}");
    }
}

#[test]
fn bad_database_urls_stop_the_service_with_one_line_that_hides_the_password() {
    for url in [
        "mysql://root:hunter2@db/items",
        "db.example.com:5432",
        "postgres://app:hunter2@db/items?sslmode=maybe",
        "postgres://app:hunter2@db:port/items",
        "postgres://app:hunter2@/items",
        "postgres://app:hunter2@db/items?sslmode=verify-full&sslrootcert=/missing/root.pem",
        "sqlite://",
    ] {
        let (code, stdout, stderr) = run_binary(&[], &[("DATABASE_URL", url)]);
        assert_eq!(code, 2, "{url}: {stdout}{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{url}: {stderr}");
        assert!(stderr.contains("DATABASE_URL"), "{url}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{url}: {stderr}");
    }
}

#[test]
fn an_unreadable_password_file_stops_the_service_naming_it() {
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("DATABASE_URL", "postgres://app@db/items"),
            ("DATABASE_PASSWORD_FILE", "/definitely/missing/password"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("DATABASE_PASSWORD_FILE"), "{stderr}");
}

#[test]
fn transfer_names_the_side_that_is_wrong() {
    let (code, _, stderr) = run_binary(
        &[
            "transfer",
            "--from",
            "a.db",
            "--to",
            "postgres://u:hunter2@h/db?sslmode=nope",
        ],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--to has an unknown sslmode"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn version_shows_the_build_version() {
    let (code, stdout, _) = run_binary(&["--version"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("items-api "), "{stdout}");
    // The image sets BUILD_VERSION at run time; --version agrees with /api/health.
    let (code, stdout, _) = run_binary(&["--version"], &[("BUILD_VERSION", "3.1.4-e2e")]);
    assert_eq!(code, 0);
    assert_eq!(stdout, "items-api 3.1.4-e2e\n");
}

#[test]
fn the_service_starts_without_hanging() {
    // Not a benchmark (scripts/bench measures start-up); a guard against start-up hanging.
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let _server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn the_readme_settings_table_lists_every_variable_of_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for variable in setting_variables() {
        assert!(
            readme.contains(&format!("| `{variable}` |")),
            "README's settings table lacks {variable}"
        );
    }
}

#[test]
fn managed_identity_sign_in_needs_the_identity_endpoint() {
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("DATABASE_URL", "postgres://app@db/items"),
            ("DATABASE_AUTH", "azure-managed-identity"),
        ],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("IDENTITY_ENDPOINT and IDENTITY_HEADER"),
        "{stderr}"
    );
}

#[test]
fn each_command_shows_its_own_options_and_help_starts_with_what_it_does() {
    let (_, help, _) = run_binary(&["--help"], &[]);
    assert!(
        help.starts_with("Items API: serve a list of short text items"),
        "{help}"
    );
    for (command, own, foreign) in [
        ("transfer", "--from", "MAX_CONNECTIONS"),
        ("migrate", "MIGRATE_APP_ROLE", "KEEPALIVE_TIMEOUT_SECS"),
        ("backup", "DATABASE_URL", "MAX_EVENT_STREAMS"),
    ] {
        let (code, text, _) = run_binary(&[command, "--help"], &[]);
        assert_eq!(code, 0);
        assert!(text.contains(own), "{command} --help lacks {own}: {text}");
        assert!(
            !text.contains(foreign),
            "{command} --help shows {foreign}: {text}"
        );
        // Its own options first; the database settings it also reads after them.
        let own_at = text.find(own).unwrap_or(usize::MAX);
        assert!(
            own_at < text.find("Database:").unwrap_or(usize::MAX),
            "{text}"
        );
    }
}
