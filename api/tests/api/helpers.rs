//! Test servers: `TestApp` runs the service in-process on port 0 with a temporary database of
//! either backend; `BinaryServer` runs the real `items-api` binary, for signals and subcommands.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use items_api::{Application, Config};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::postgres_support;

/// The service's router over `store`, for calling in-process without a server (tower's
/// `oneshot`): small limits, no page.
pub fn router_on(store: Arc<dyn items_api::store::ItemStore>) -> axum::Router {
    use items_api::http::{BodyLimits, EventStreams, RouterOptions, ServiceInfo};
    let info = ServiceInfo {
        version: "test".into(),
        build_date: String::new(),
        vcs_ref: String::new(),
        hostname: "test".into(),
        environment: "development".into(),
        started: Instant::now(),
        stopping: Default::default(),
    };
    let limits = BodyLimits {
        max_bytes: 1024,
        timeout: Duration::from_secs(5),
        max_text_chars: 100,
    };
    let streams = EventStreams::new(
        10,
        Duration::from_secs(15),
        tokio_util::sync::CancellationToken::new(),
    );
    let state = items_api::AppState::new(store, info, limits, streams);
    let options = RouterOptions {
        request_timeout: Duration::from_secs(5),
        static_dir: None,
    };
    items_api::app(state, options)
}

/// The storage backends every contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when the test set `METRICS_ADDR`.
    pub metrics_addr: Option<SocketAddr>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    // Kept last so the directory outlives the server.
    _dir: Option<TempDir>,
}

impl TestApp {
    /// A fresh service with an empty database in its own temporary directory.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db_path = dir.path().join("app.db");
        let mut app = Self::spawn_on(&db_path, customize).await;
        app._dir = Some(dir);
        app
    }

    /// A fresh service with an empty database on `backend`; `None` (after saying why) when
    /// Postgres is not available outside CI.
    pub async fn on(backend: Backend) -> Option<Self> {
        Self::on_with(backend, |_| {}).await
    }

    /// On Postgres the schema is migrated by its owner first (`items-api migrate`), and the
    /// service signs in as a role with only the rights that grants: every contract test also
    /// proves the service needs no more.
    pub async fn on_with(backend: Backend, customize: impl FnOnce(&mut Config)) -> Option<Self> {
        match backend {
            Backend::Sqlite => Some(Self::spawn_with(customize).await),
            Backend::Postgres => {
                let url = match postgres_support::fresh_app_role_url().await {
                    Ok(url) => url,
                    Err(reason) => {
                        postgres_support::unavailable(&reason);
                        return None;
                    }
                };
                Some(
                    Self::spawn_with(|config| {
                        config.database_url = items_api::config::DatabaseUrl(url);
                        customize(config);
                    })
                    .await,
                )
            }
        }
    }

    /// A service on the Postgres database `url`, which it migrates itself.
    pub async fn on_url(url: &str, customize: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_with(|config| {
            config.database_url = items_api::config::DatabaseUrl(url.to_owned());
            config.migrate_on_start = Some(true);
            customize(config);
        })
        .await
    }

    /// A service on an existing database path (the caller owns the directory).
    pub async fn spawn_on(db_path: &Path, customize: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::with_defaults(db_path);
        customize(&mut config);
        let application = Application::build(&config)
            .await
            .expect("the service starts");
        let addr = application.local_addr();
        let metrics_addr = application.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            metrics_addr,
            client: reqwest::Client::new(),
            stop: Some(stop),
            server: Some(server),
            _dir: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("GET is answered")
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE is answered")
    }

    pub async fn post_json(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/items"))
            .json(body)
            .send()
            .await
            .expect("POST is answered")
    }

    /// POSTs raw bytes with an optional content type.
    pub async fn post_raw(
        &self,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url("/api/items")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("POST is answered")
    }

    /// Adds an item and returns it, asserting a 201.
    pub async fn add(&self, text: &str) -> Value {
        let response = self.post_json(&serde_json::json!({ "text": text })).await;
        assert_eq!(response.status(), 201, "adding {text:?}");
        response.json().await.expect("JSON item")
    }

    pub async fn items(&self) -> Vec<Value> {
        let response = self.get("/api/items").await;
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON list")
    }

    /// Stops the service the way SIGTERM does and waits until it has closed the database.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

/// Parses a JSON body, whatever the status.
pub async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text:?}"))
}

/// Asserts a FastAPI-style 422 whose first error has this `type` and `loc`.
pub async fn assert_validation_error(response: reqwest::Response, kind: &str, loc: Value) {
    assert_eq!(response.status(), 422);
    assert_json_content_type(&response);
    let body = json_of(response).await;
    let first = &body["detail"][0];
    assert_eq!(first["type"], kind, "{body}");
    assert_eq!(first["loc"], loc, "{body}");
    assert!(
        first["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
        "{body}"
    );
}

pub fn assert_json_content_type(response: &reqwest::Response) {
    let content_type = response
        .headers()
        .get("content-type")
        .expect("content-type");
    assert_eq!(content_type, "application/json");
}

/// `2026-01-02T03:04:05.123456+00:00`
pub fn assert_python_isoformat(value: &Value) {
    let text = value.as_str().expect("created_at is a string");
    let bytes = text.as_bytes();
    let shape_ok = text.len() == 32
        && text.ends_with("+00:00")
        && bytes[10] == b'T'
        && bytes[19] == b'.'
        && text[..4].chars().all(|c| c.is_ascii_digit())
        && text[20..26].chars().all(|c| c.is_ascii_digit());
    assert!(
        shape_ok,
        "created_at {text:?} is not Python isoformat with microseconds"
    );
}

/// The real binary, started with the given environment, on a free port.
pub struct BinaryServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub output: Arc<Mutex<Vec<String>>>,
}

pub fn binary() -> Command {
    without_settings(Command::new(env!("CARGO_BIN_EXE_items-api")))
}

/// A test must not depend on the developer's environment.
fn without_settings(mut command: Command) -> Command {
    for variable in setting_variables() {
        command.env_remove(variable);
    }
    command
}

/// Every environment variable the binary reads, from its command-line definition.
pub fn setting_variables() -> Vec<String> {
    fn collect(command: &clap::Command, names: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let Some(name) = arg.get_env() {
                names.push(name.to_string_lossy().into_owned());
            }
        }
        for subcommand in command.get_subcommands() {
            collect(subcommand, names);
        }
    }
    use clap::CommandFactory;
    let mut names = Vec::new();
    collect(&items_api::Cli::command(), &mut names);
    names.sort();
    names.dedup();
    names
}

impl BinaryServer {
    pub fn start(db_path: &Path, extra_env: &[(&str, &str)]) -> Self {
        Self::start_command(binary(), db_path, extra_env)
    }

    /// The binary under an open-file limit of `files` (`ulimit -n`, set by a shell that then
    /// becomes the binary).
    pub fn start_with_open_file_limit(
        files: u64,
        db_path: &Path,
        extra_env: &[(&str, &str)],
    ) -> Self {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_items-api"));
        Self::start_command(without_settings(shell), db_path, extra_env)
    }

    fn start_command(mut command: Command, db_path: &Path, extra_env: &[(&str, &str)]) -> Self {
        command
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("DB_PATH", db_path)
            .env("LOG_FORMAT", "json")
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("the binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let (found, addr) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        collect_lines(stderr, Arc::clone(&output), None);
        collect_lines(stdout, Arc::clone(&output), Some(found));
        let addr = addr
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!("no 'listening' line; output: {:?}", output.lock().unwrap())
            });
        Self {
            child,
            addr,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the service did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.output
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    listening: Option<std::sync::mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let (Some(sender), Some(addr)) = (&listening, listening_addr(&line)) {
                let _ = sender.send(addr);
            }
            output.lock().unwrap().push(line);
        }
    });
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let event: Value = serde_json::from_str(line).ok()?;
    if event["message"] != "listening" {
        return None;
    }
    event["addr"].as_str()?.parse().ok()
}

/// Runs the binary to completion (at most a minute); returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = binary()
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "items-api {args:?} did not finish within a minute: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Exactly what the seed's `_init_db` does, plus rows as its `create_item` wrote them.
pub fn seed_database(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL;", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS items (
              id INTEGER PRIMARY KEY AUTOINCREMENT,
              text TEXT NOT NULL,
              created_at TEXT NOT NULL
            )",
    )
    .unwrap();
    for (text, created_at) in [
        ("from python", "2025-03-04T05:06:07.891011+00:00"),
        ("no microseconds", "2025-03-04T05:06:08+00:00"),
        ("ünïcödé ✓", "2025-03-04T05:06:09.000001+00:00"),
    ] {
        conn.execute(
            "INSERT INTO items(text, created_at) VALUES(?, ?)",
            [text, created_at],
        )
        .unwrap();
    }
    // The seed deleted nothing, but a gap in ids must not matter.
    conn.execute("DELETE FROM items WHERE id = 2", []).unwrap();
}
