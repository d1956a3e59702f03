//! What only the Postgres backend does: several processes on one database, outages, the pool,
//! PgBouncer, TLS, passwords and schema versions.

use items_api::store::postgres::SCHEMA_VERSION;
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Backend, BinaryServer, TestApp, json_of, run_binary};
use crate::postgres_support::{
    self, Cluster, PASSWORD, PASSWORD_USER, connect, database, eventually, execute, unavailable,
};

/// A cluster of the test's own (it will be stopped), or `None` after saying why not.
fn own_cluster() -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

fn serve(url: &str) -> BinaryServer {
    let unused = std::env::temp_dir().join("unused-sqlite.db");
    BinaryServer::start(
        &unused,
        &[("DATABASE_URL", url), ("MIGRATE_ON_START", "true")],
    )
}

async fn post(client: &reqwest::Client, server: &BinaryServer, text: &str) -> reqwest::Response {
    client
        .post(server.url("/api/items"))
        .json(&json!({ "text": text }))
        .send()
        .await
        .expect("POST is answered")
}

async fn ids_listed_by(client: &reqwest::Client, url: String) -> HashSet<i64> {
    let items: Vec<Value> = client.get(url).send().await.unwrap().json().await.unwrap();
    items
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn health_reports_the_backend_the_pool_and_an_item_estimate() {
    let Some(app) = TestApp::on(Backend::Postgres).await else {
        return;
    };
    app.add("one").await;
    let body = json_of(app.get("/api/health").await).await;
    let database = &body["database"];
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(database["backend"], "postgres");
    assert_eq!(
        (database["reachable"].clone(), database["writable"].clone()),
        (json!(true), json!(true))
    );
    assert!(
        database["item_count"].is_i64() || database["item_count"].is_null(),
        "{database}"
    );
    assert!(
        database.get("journal_mode").is_none(),
        "no SQLite field: {database}"
    );
    assert_eq!(database["details"]["pool"]["max_size"], 10);
    assert_eq!(database["details"]["sslmode"], "disable");
    assert!(
        database["details"]["server_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty())
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_database_read_each_others_writes_at_once() {
    let Some(url) = database().await else { return };
    let (first, second) = (serve(&url), serve(&url));
    let client = reqwest::Client::new();
    for (writer, reader) in [(&first, &second), (&second, &first)] {
        let item = json_of(post(&client, writer, "written here").await).await;
        let seen = client
            .get(reader.url(&format!("/api/items/{}", item["id"])))
            .send()
            .await
            .unwrap();
        assert_eq!(seen.status(), 200, "read-your-writes across processes");
        assert!(
            ids_listed_by(&client, reader.url("/api/items?limit=5"))
                .await
                .contains(&item["id"].as_i64().unwrap())
        );
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_posts_split_across_two_processes_get_unique_ids_listed_by_both() {
    let Some(url) = database().await else { return };
    let servers = Arc::new([serve(&url), serve(&url)]);
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let (servers, client) = (Arc::clone(&servers), client.clone());
            tokio::spawn(async move {
                let response = post(&client, &servers[n % 2], &format!("item {n}")).await;
                assert_eq!(response.status(), 201);
                json_of(response).await["id"].as_i64().unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        assert!(
            ids.insert(task.await.unwrap()),
            "an id was handed out twice"
        );
    }
    for server in servers.iter() {
        assert_eq!(ids_listed_by(&client, server.url("/api/items")).await, ids);
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_starting_together_migrate_the_schema_once() {
    let Some(url) = database().await else { return };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || serve(&url))
        })
        .collect();
    let servers: Vec<BinaryServer> = starts
        .into_iter()
        .map(|start| start.join().unwrap())
        .collect();
    let client = reqwest::Client::new();
    for server in &servers {
        let response = client.get(server.url("/api/health")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let rows = connect(&url)
        .await
        .unwrap()
        .query(
            "SELECT version FROM items_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    let migrated = servers
        .iter()
        .filter(|server| server.log_contains("applied database migration"))
        .count();
    assert_eq!(migrated, 1, "exactly one process applied the migration");
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_under_load_answers_503_then_recovers_without_losing_acknowledged_writes()
{
    let Some(cluster) = own_cluster() else { return };
    let app = TestApp::on_url(&cluster.url("postgres", ""), |config| {
        config.database_connect_timeout_ms = 500;
        config.database_statement_timeout_ms = 2000;
    })
    .await;
    let app = Arc::new(app);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|writer| {
            let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
            tokio::spawn(async move {
                let (mut acknowledged, mut refused, mut other) = (Vec::new(), 0, Vec::new());
                for n in 0..2000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let started = Instant::now();
                    let response = app
                        .post_json(&json!({"text": format!("w{writer}-{n}")}))
                        .await;
                    let waited = started.elapsed();
                    match response.status().as_u16() {
                        201 => acknowledged.push(json_of(response).await["id"].as_i64().unwrap()),
                        503 => {
                            assert_eq!(response.headers()["retry-after"], "1");
                            // Refused, or (a write in flight when the server went) unconfirmed.
                            let detail = json_of(response).await["detail"].clone();
                            assert!(
                                detail == "Service Unavailable"
                                    || detail == items_api::http::OUTCOME_UNKNOWN,
                                "{detail}"
                            );
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        status => other.push(status),
                    }
                    assert!(
                        waited < Duration::from_secs(10),
                        "a request hung for {waited:?}"
                    );
                }
                (acknowledged, refused, other)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.crash_server().unwrap();
    let down = eventually(Duration::from_secs(10), async || {
        app.get("/api/health").await.status() == 503
    })
    .await;
    assert!(down, "readiness never noticed the outage");
    assert_eq!(
        app.get("/api/healthz").await.status(),
        200,
        "liveness stays up"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.start_server().unwrap();
    let recovered = eventually(Duration::from_secs(20), async || {
        app.post_json(&json!({"text": "after the outage"}))
            .await
            .status()
            == 201
    })
    .await;
    assert!(recovered, "the service did not recover by itself");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acknowledged, mut refused) = (HashSet::new(), 0);
    for writer in writers {
        let (ids, refusals, other) = writer.await.unwrap();
        assert!(other.is_empty(), "statuses other than 201/503: {other:?}");
        acknowledged.extend(ids);
        refused += refusals;
    }
    assert!(refused > 0, "the outage was not seen by any writer");
    let listed: HashSet<i64> = app
        .items()
        .await
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect();
    let lost: Vec<_> = acknowledged.difference(&listed).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn the_service_starts_before_the_database_and_connects_when_it_comes_up() {
    let Some(cluster) = own_cluster() else { return };
    cluster.stop_server().unwrap();
    let app = TestApp::on_url(&cluster.url("postgres", ""), |config| {
        config.database_connect_timeout_ms = 500;
    })
    .await;
    let health = app.get("/api/health").await;
    assert_eq!(health.status(), 503);
    let body = json_of(health).await;
    assert!(
        body["database"]["error"]
            .as_str()
            .unwrap()
            .contains("not ready")
            || body["database"]["error"]
                .as_str()
                .unwrap()
                .contains("connect"),
        "{body}"
    );
    let refused = app.post_json(&json!({"text": "too early"})).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(app.get("/api/healthz").await.status(), 200);

    cluster.start_server().unwrap();
    let ready = eventually(Duration::from_secs(20), async || {
        app.get("/api/health").await.status() == 200
    })
    .await;
    assert!(ready, "the service did not connect by itself");
    assert_eq!(app.add("now").await["text"], "now");
}

/// Whether a statement of the service is waiting for a lock right now.
async fn an_insert_waits_for_a_lock(locker: &tokio_postgres::Client) -> bool {
    let waiting = locker
        .query(
            "SELECT 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
             AND query LIKE '%INSERT INTO items%' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap();
    !waiting.is_empty()
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_busy_pool_answers_503_with_retry_after_and_a_statement_past_its_time_is_cancelled() {
    let Some(url) = database().await else { return };
    let app = TestApp::on_url(&url, |config| {
        config.database_pool_size = 1;
        config.database_pool_timeout_ms = 300;
        config.database_statement_timeout_ms = 3000;
    })
    .await;
    let warm = app.add("migrated and warm").await;
    // Another session holds the table: the one pooled connection waits on it.
    let locker = connect(&url).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let app = Arc::new(app);
    let blocked = {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            app.post_json(&json!({"text": "waits for the lock"}))
                .await
                .status()
        })
    };
    let holding = eventually(Duration::from_secs(5), async || {
        an_insert_waits_for_a_lock(&locker).await
    })
    .await;
    assert!(holding, "the insert never waited on the lock");

    let started = Instant::now();
    let response = app.get(&format!("/api/items/{}", warm["id"])).await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        waited < Duration::from_secs(2),
        "waited {waited:?} for a connection"
    );

    // The insert ran out of its 3 s and was cancelled on the server: nothing stored.
    assert_eq!(blocked.await.unwrap(), 503);
    let cancelled = eventually(Duration::from_secs(2), async || {
        !an_insert_waits_for_a_lock(&locker).await
    })
    .await;
    assert!(cancelled, "the timed-out INSERT still waits on the server");
    locker.batch_execute("ROLLBACK").await.unwrap();
    let texts: Vec<String> = app
        .items()
        .await
        .iter()
        .map(|item| item["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, vec!["migrated and warm"]);
    let health = json_of(app.get("/api/health").await).await;
    assert!(
        health["database"]["details"]["pool"]["timeouts"]
            .as_u64()
            .unwrap()
            >= 1,
        "{health}"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn the_contract_holds_through_pgbouncer_in_transaction_mode() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let bouncer = match PgBouncer::start(cluster) {
        Ok(bouncer) => bouncer,
        Err(reason) => return unavailable(&reason),
    };
    let app = TestApp::on_url(&bouncer.url(), |config| {
        config.database_pool_size = 4;
    })
    .await;
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..100)
        .map(|n| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                app.add(&format!("bounced {n}")).await["id"]
                    .as_i64()
                    .unwrap()
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        assert!(ids.insert(task.await.unwrap()));
    }
    let newest = *ids.iter().max().unwrap();
    let page: Vec<Value> = app.get("/api/items?limit=10").await.json().await.unwrap();
    assert_eq!(page.len(), 10);
    assert_eq!(page[0]["id"], newest);
    let next: Vec<Value> = app
        .get(&format!("/api/items?limit=10&before={}", page[9]["id"]))
        .await
        .json()
        .await
        .unwrap();
    assert!(next[0]["id"].as_i64().unwrap() < page[9]["id"].as_i64().unwrap());
    assert_eq!(app.get(&format!("/api/items/{newest}")).await.status(), 200);
    let deleted = app.delete(&format!("/api/items/{newest}")).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.items().await.len(), 99);
    assert_eq!(app.get("/api/health").await.status(), 200);
}

/// PgBouncer in transaction mode in front of `cluster`, on a database of its own. Debian's 1.18
/// keeps no prepared statements across transactions at all, as Azure's `max_prepared_statements
/// = 0` does.
struct PgBouncer {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl PgBouncer {
    fn start(cluster: &Cluster) -> Result<Self, String> {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|path| std::path::Path::new(path).is_file())
            .ok_or("pgbouncer not found (apt-get install pgbouncer)")?;
        let database = format!("bounce{}", std::process::id());
        cluster.psql(&format!("CREATE DATABASE {database}"))?;
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| error.to_string())?
            .port();
        let config = dir.path().join("pgbouncer.ini");
        std::fs::write(dir.path().join("users.txt"), "\"postgres\" \"\"\n")
            .map_err(|e| e.to_string())?;
        std::fs::write(
            &config,
            format!(
                "[databases]\nitems = host=127.0.0.1 port={server} dbname={database}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_type = trust\nauth_file = {dir}/users.txt\n\
                 pool_mode = transaction\n\
                 default_pool_size = 4\nlogfile = {dir}/pgbouncer.log\n",
                server = cluster.port,
                dir = dir.path().display(),
            ),
        )
        .map_err(|error| error.to_string())?;
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut command = if root {
            Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", binary]);
            command
        } else {
            Command::new(binary)
        };
        let errors =
            std::fs::File::create(dir.path().join("stderr.log")).map_err(|e| e.to_string())?;
        let child = command
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors)
            .spawn()
            .map_err(|error| format!("cannot start pgbouncer: {error}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dir.path().join("pgbouncer.log")).unwrap_or_default();
                return Err(format!("pgbouncer did not start: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            child,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/items?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster of this process, for tests that need its files (certificates) or its users.
fn shared_cluster() -> Option<&'static Cluster> {
    match postgres_support::local_cluster() {
        Ok(cluster) => Some(cluster),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

/// Whether the connection of `application_name` uses TLS, as the server sees it.
async fn uses_tls(cluster: &Cluster, application_name: &str) -> bool {
    let client = connect(&cluster.url("postgres", "")).await.unwrap();
    let rows = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&application_name],
        )
        .await
        .unwrap();
    !rows.is_empty() && rows.iter().all(|row| row.get::<_, bool>(0))
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn sslmode_require_encrypts_against_a_self_signed_server() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require&application_name=tls-require",
        cluster.port
    );
    let url = postgres_support::with_search_path(&url, &fresh_schema(cluster).await);
    let server = serve(&url);
    let client = reqwest::Client::new();
    assert_eq!(post(&client, &server, "over TLS").await.status(), 201);
    assert!(
        uses_tls(cluster, "tls-require").await,
        "the connection is not encrypted"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn sslmode_verify_full_accepts_the_server_its_root_certificate_vouches_for() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    for host in ["localhost", "127.0.0.1"] {
        let url = format!(
            "postgres://postgres@{host}:{}/postgres?sslmode=verify-full&sslrootcert={}&application_name=tls-full",
            cluster.port,
            cluster.ca_file.display()
        );
        let url = postgres_support::with_search_path(&url, &fresh_schema(cluster).await);
        let server = serve(&url);
        let client = reqwest::Client::new();
        assert_eq!(
            post(&client, &server, "verified").await.status(),
            201,
            "{host}"
        );
        assert!(uses_tls(cluster, "tls-full").await);
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn sslmode_verify_full_refuses_a_server_no_trusted_root_vouches_for() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let url = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=verify-full",
        cluster.port
    );
    let (code, _, stderr) =
        run_binary(&[], &[("DATABASE_URL", &url), ("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn verify_ca_checks_the_chain_but_not_the_host_name_and_verify_full_checks_both() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    // `hostaddr` reaches the server; the certificate is checked against the name, which it lacks.
    let url = |mode: &str| {
        format!(
            "postgres://postgres@not-in-the-certificate:{}/postgres?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            cluster.port,
            cluster.ca_file.display()
        )
    };
    let (code, _, stderr) = run_binary(
        &[],
        &[
            ("DATABASE_URL", &url("verify-full")),
            ("BIND_ADDR", "127.0.0.1:0"),
        ],
    );
    assert_eq!(
        code, 1,
        "verify-full accepted a certificate for another name: {stderr}"
    );
    assert!(stderr.contains("certificate"), "{stderr}");
    let url = postgres_support::with_search_path(&url("verify-ca"), &fresh_schema(cluster).await);
    let server = serve(&url);
    assert_eq!(
        post(&reqwest::Client::new(), &server, "chain only")
            .await
            .status(),
        201
    );
}

async fn fresh_schema(cluster: &Cluster) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let schema = format!(
        "tls{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    execute(
        &cluster.url("postgres", ""),
        &format!("CREATE SCHEMA {schema}"),
    )
    .await
    .unwrap();
    schema
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn a_wrong_password_stops_the_start_with_a_clear_error_that_does_not_show_it() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let url = format!(
        "postgres://{PASSWORD_USER}:not-the-{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let (code, stdout, stderr) =
        run_binary(&[], &[("DATABASE_URL", &url), ("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-") && !stdout.contains("not-the-"),
        "the password was printed"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn the_password_can_come_from_a_file() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let schema = fresh_schema(cluster).await;
    execute(
        &cluster.url("postgres", ""),
        &format!("GRANT ALL ON SCHEMA {schema} TO {PASSWORD_USER}"),
    )
    .await
    .unwrap();
    let url = postgres_support::with_search_path(
        &format!(
            "postgres://{PASSWORD_USER}@127.0.0.1:{}/postgres?sslmode=disable",
            cluster.port
        ),
        &schema,
    );
    let unused = dir.path().join("unused.db");
    let server = BinaryServer::start(
        &unused,
        &[
            ("DATABASE_URL", &url),
            ("DATABASE_PASSWORD_FILE", file.to_str().unwrap()),
            ("MIGRATE_ON_START", "true"),
        ],
    );
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &server, "with a secret file").await.status(),
        201
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn a_missing_database_stops_the_start_with_a_clear_error() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let url = cluster.url("no_such_database", "");
    let (code, _, stderr) =
        run_binary(&[], &[("DATABASE_URL", &url), ("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("\"no_such_database\" does not exist"),
        "{stderr}"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let Some(url) = database().await else { return };
    execute(
        &url,
        "CREATE TABLE items_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO items_schema_migrations (version) VALUES (1), (99);",
    )
    .await
    .unwrap();
    let (code, _, stderr) =
        run_binary(&[], &[("DATABASE_URL", &url), ("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "schema version 99, newer than this build knows ({SCHEMA_VERSION}) and not compatible"
        )),
        "{stderr}"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_through_one_process_leaves_the_other_processes_list_at_once() {
    let Some(url) = database().await else { return };
    let (first, second) = (serve(&url), serve(&url));
    let client = reqwest::Client::new();
    let item = json_of(post(&client, &first, "short-lived").await).await;
    let id = item["id"].as_i64().unwrap();
    // Both lists are read (and kept) while the item exists.
    for server in [&first, &second] {
        assert!(
            ids_listed_by(&client, server.url("/api/items"))
                .await
                .contains(&id)
        );
    }
    let deleted = client
        .delete(second.url(&format!("/api/items/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    for server in [&first, &second] {
        assert!(
            !ids_listed_by(&client, server.url("/api/items"))
                .await
                .contains(&id)
        );
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_change_made_with_sql_by_hand_shows_in_the_next_list() {
    let Some(url) = database().await else { return };
    let app = TestApp::on_url(&url, |_| {}).await;
    app.add("through the API").await;
    assert_eq!(app.items().await.len(), 1);
    execute(
        &url,
        "INSERT INTO items (text, created_at) VALUES ('by hand', '2026-01-01T00:00:00.000000+00:00')",
    )
    .await
    .unwrap();
    let texts: Vec<Value> = app
        .items()
        .await
        .iter()
        .map(|item| item["text"].clone())
        .collect();
    assert_eq!(texts, vec![json!("by hand"), json!("through the API")]);
    execute(&url, "DELETE FROM items WHERE text = 'by hand'")
        .await
        .unwrap();
    assert_eq!(app.items().await.len(), 1);
}

/// A stand-in for the Container Apps identity endpoint: answers with `token` when asked with the
/// right secret for the Postgres resource (else 400), or with `status` when that is not 200.
/// Returns its URL and the request lines it saw.
async fn identity_endpoint(
    token: &'static str,
    status: u16,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/msi/token", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = vec![0; 4096];
            let read = socket.read(&mut request).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            let first_line = request.lines().next().unwrap_or_default().to_owned();
            record.lock().unwrap().push(first_line.clone());
            let asked_right = first_line
                .contains("resource=https%3A%2F%2Fossrdbms-aad.database.windows.net")
                && request
                    .lines()
                    .any(|line| line.eq_ignore_ascii_case("x-identity-header: stub-secret"));
            let expires = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            let (code, body) = match (status, asked_right) {
                (200, true) => (
                    200,
                    format!(
                        r#"{{"access_token":"{token}","expires_on":"{expires}","token_type":"Bearer"}}"#
                    ),
                ),
                (200, false) => (400, r#"{"error":"bad request"}"#.to_owned()),
                (other, _) => (other, r#"{"error":"unavailable"}"#.to_owned()),
            };
            let response = format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, seen)
}

fn managed_identity_env<'a>(url: &'a str, endpoint: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", url),
        ("DATABASE_AUTH", "azure-managed-identity"),
        ("IDENTITY_ENDPOINT", endpoint),
        ("IDENTITY_HEADER", "stub-secret"),
        ("AZURE_CLIENT_ID", "client-1234"),
        ("MIGRATE_ON_START", "true"),
    ]
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managed_identity_token_is_the_password_of_each_new_connection() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let schema = fresh_schema(cluster).await;
    execute(
        &cluster.url("postgres", ""),
        &format!("GRANT ALL ON SCHEMA {schema} TO {PASSWORD_USER}"),
    )
    .await
    .unwrap();
    let url = postgres_support::with_search_path(
        &format!(
            "postgres://{PASSWORD_USER}@127.0.0.1:{}/postgres?sslmode=disable",
            cluster.port
        ),
        &schema,
    );
    let (endpoint, seen) = identity_endpoint(PASSWORD, 200).await;
    let unused = std::env::temp_dir().join("unused-sqlite.db");
    let server = BinaryServer::start(&unused, &managed_identity_env(&url, &endpoint));
    assert_eq!(
        post(&reqwest::Client::new(), &server, "signed in with a token")
            .await
            .status(),
        201
    );
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the token endpoint was not asked");
    assert!(
        seen.iter()
            .all(|line| line.contains("client_id=client-1234") && line.contains("api-version=")),
        "{seen:?}"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn a_token_endpoint_that_fails_stops_the_start_with_its_reason() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (endpoint, _) = runtime.block_on(identity_endpoint("unused", 503));
    let url = format!(
        "postgres://{PASSWORD_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let mut env = managed_identity_env(&url, &endpoint);
    env.push(("BIND_ADDR", "127.0.0.1:0"));
    let (code, _, stderr) = run_binary(&[], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot get a managed identity token: the endpoint answered 503"),
        "{stderr}"
    );
    assert!(!stderr.contains("stub-secret"), "{stderr}");
}

/// What a stand-in token endpoint saw: the method and path of each request, and its form fields.
type SeenForms = Arc<std::sync::Mutex<Vec<(String, std::collections::HashMap<String, String>)>>>;

/// A stand-in for Entra ID's token endpoint (`AZURE_AUTHORITY_HOST`): answers a POST of the
/// client-credentials form for `token` (valid for `expires_in` seconds), or with `status` when
/// that is not 200. Returns its authority host and what it saw.
async fn entra_token_endpoint(
    token: &'static str,
    status: u16,
    expires_in: u64,
) -> (String, SeenForms) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = format!("http://{}/", listener.local_addr().unwrap());
    let seen: SeenForms = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            // The head, then as many body bytes as it announces.
            let mut request = Vec::new();
            let mut chunk = vec![0; 4096];
            let (head, body) = loop {
                let read = socket.read(&mut chunk).await.unwrap_or(0);
                if read == 0 {
                    break (String::new(), Vec::new());
                }
                request.extend_from_slice(&chunk[..read]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&request[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break (head, request[end + 4..end + 4 + length].to_vec());
                }
            };
            let request_line = head.lines().next().unwrap_or_default().to_owned();
            let form: std::collections::HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            record.lock().unwrap().push((request_line, form));
            let (code, body) = if status == 200 {
                (
                    200,
                    format!(
                        r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"{token}"}}"#
                    ),
                )
            } else {
                (
                    status,
                    r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject."}"#.to_owned(),
                )
            };
            let response = format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (authority, seen)
}

fn workload_identity_env<'a>(
    url: &'a str,
    authority: &'a str,
    token_file: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", url),
        ("DATABASE_AUTH", "azure-workload-identity"),
        ("AZURE_AUTHORITY_HOST", authority),
        ("AZURE_TENANT_ID", "tenant-5678"),
        ("AZURE_CLIENT_ID", "client-1234"),
        ("AZURE_FEDERATED_TOKEN_FILE", token_file),
        ("MIGRATE_ON_START", "true"),
    ]
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_identity_token_is_the_password_and_the_federated_token_is_read_for_each_exchange()
 {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let schema = fresh_schema(cluster).await;
    execute(
        &cluster.url("postgres", ""),
        &format!("GRANT ALL ON SCHEMA {schema} TO {PASSWORD_USER}"),
    )
    .await
    .unwrap();
    let application = format!("workload-identity-{}", std::process::id());
    let url = postgres_support::with_search_path(
        &format!(
            "postgres://{PASSWORD_USER}@127.0.0.1:{}/postgres?sslmode=disable&application_name={application}",
            cluster.port
        ),
        &schema,
    );
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-assertion-1\n").unwrap();
    // Valid for less than the margin the service keeps: every new connection exchanges again.
    let (authority, seen) = entra_token_endpoint(PASSWORD, 200, 60).await;
    let unused = dir.path().join("unused.db");
    let server = BinaryServer::start(
        &unused,
        &workload_identity_env(&url, &authority, token_file.to_str().unwrap()),
    );
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, &server, "signed in with workload identity")
            .await
            .status(),
        201
    );
    let (request_line, form) = seen.lock().unwrap()[0].clone();
    assert!(
        request_line.starts_with("POST /tenant-5678/oauth2/v2.0/token "),
        "{request_line}"
    );
    let field = |name: &str| form.get(name).map(String::as_str);
    assert_eq!(field("grant_type"), Some("client_credentials"));
    assert_eq!(field("client_id"), Some("client-1234"));
    assert_eq!(
        field("scope"),
        Some("https://ossrdbms-aad.database.windows.net/.default")
    );
    assert_eq!(
        field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(field("client_assertion"), Some("federated-assertion-1"));

    // Kubernetes replaces the projected token; the next connection signs in with the new one.
    std::fs::write(&token_file, "federated-assertion-2\n").unwrap();
    execute(
        &cluster.url("postgres", ""),
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '{application}%'"
        ),
    )
    .await
    .unwrap();
    let renewed = eventually(Duration::from_secs(20), async || {
        post(&client, &server, "after the token file changed")
            .await
            .status()
            == 201
            && seen.lock().unwrap().iter().any(|(_, form)| {
                form.get("client_assertion").map(String::as_str) == Some("federated-assertion-2")
            })
    })
    .await;
    assert!(renewed, "{:?}", seen.lock().unwrap().len());
    let output = server.output.lock().unwrap().join("\n");
    assert!(
        !output.contains("federated-assertion") && !output.contains(PASSWORD),
        "a credential was logged: {output}"
    );
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[test]
fn a_token_exchange_that_entra_id_refuses_stops_the_start_with_its_reason() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (authority, _) = runtime.block_on(entra_token_endpoint("unused", 401, 3600));
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-assertion-refused").unwrap();
    let url = format!(
        "postgres://{PASSWORD_USER}@127.0.0.1:{}/postgres?sslmode=disable",
        cluster.port
    );
    let mut env = workload_identity_env(&url, &authority, token_file.to_str().unwrap());
    env.push(("BIND_ADDR", "127.0.0.1:0"));
    let (code, stdout, stderr) = run_binary(&[], &env);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot get a workload identity token: the endpoint answered 401")
            && stderr.contains("AADSTS700213"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("federated-assertion") && !stdout.contains("federated-assertion"),
        "{stderr}"
    );
}

#[test]
fn workload_identity_sign_in_names_the_missing_setting_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "jwt").unwrap();
    let file = token_file.to_str().unwrap();
    let base = [
        ("DATABASE_URL", "postgres://app@db/items"),
        ("DATABASE_AUTH", "azure-workload-identity"),
    ];
    for (given, missing) in [
        (
            vec![
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_FEDERATED_TOKEN_FILE", file),
            ],
            "AZURE_CLIENT_ID",
        ),
        (
            vec![
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_FEDERATED_TOKEN_FILE", file),
            ],
            "AZURE_TENANT_ID",
        ),
        (
            vec![("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t")],
            "AZURE_FEDERATED_TOKEN_FILE",
        ),
    ] {
        let env: Vec<_> = base.iter().copied().chain(given).collect();
        let (code, _, stderr) = run_binary(&[], &env);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&format!("needs {missing},")), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
#[tokio::test]
async fn a_start_on_a_migrated_database_logs_nothing_that_reads_like_an_error() {
    let Some(url) = database().await else { return };
    drop(serve(&url));
    let again = serve(&url);
    assert!(
        !again.log_contains("already exists") && !again.log_contains("NOTICE"),
        "{:?}",
        again.output.lock().unwrap()
    );
}
