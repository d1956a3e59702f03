//! Throwaway Postgres servers for the tests: Debian's PostgreSQL (`initdb`, `pg_ctl`) in a
//! temporary directory on a free loopback port, with TLS on (a test CA signs the server
//! certificate). `TEST_DATABASE_URL` names an existing server to use instead of the shared one.
//!
//! Every cluster has a watchdog process that stops it and removes its directory once the test
//! process has gone, however it ended.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A user whose password is checked (SCRAM), for the wrong-password tests.
pub const PASSWORD_USER: &str = "items_pw";
pub const PASSWORD: &str = "right-password";

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    /// The CA that signed the server certificate (for `sslrootcert`).
    pub ca_file: PathBuf,
}

impl Cluster {
    /// A new cluster of its own, stopped and removed when dropped.
    pub fn start() -> Result<Self, String> {
        let initdb = find_tool("initdb")?;
        let bin = initdb.parent().unwrap_or(Path::new("/")).to_path_buf();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("items-pg-")
            .tempdir()
            .map_err(|error| error.to_string())?
            .keep();
        let cluster = Self {
            port: free_port(),
            ca_file: dir.join("ca.pem"),
            dir,
            bin,
            as_postgres,
        };
        cluster.watch_for_exit()?;
        cluster.init(&initdb)?;
        cluster.start_server()?;
        cluster.psql(&format!(
            "CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'; \
             GRANT ALL ON SCHEMA public TO {PASSWORD_USER};"
        ))?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` plus `extra` parameters.
    pub fn url(&self, database: &str, extra: &str) -> String {
        let separator = if extra.is_empty() { "" } else { "&" };
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable{separator}{extra}",
            self.port
        )
    }

    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(&self, command: &mut Command, what: &str) -> Result<(), String> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("{what}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{what} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn init(&self, initdb: &Path) -> Result<(), String> {
        if self.as_postgres {
            self.run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&self.dir),
                "chown",
            )?;
        }
        self.run(
            self.command(initdb)
                .args([
                    "--auth=trust",
                    "--username=postgres",
                    "--encoding=UTF8",
                    "--no-sync",
                ])
                .arg("--pgdata")
                .arg(self.data()),
            "initdb",
        )?;
        self.write_certificates()?;
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             fsync = off\nfull_page_writes = off\nmax_connections = 200\n\
             ssl = on\nssl_cert_file = '{dir}/server.crt'\nssl_key_file = '{dir}/server.key'\n\
             password_encryption = 'scram-sha-256'\n",
            port = self.port,
            dir = self.dir.display(),
        );
        append(&self.data().join("postgresql.conf"), &conf)?;
        // The password user must authenticate; everyone else is trusted (loopback only).
        let hba = format!(
            "host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\nlocal all all trust\n"
        );
        std::fs::write(self.data().join("pg_hba.conf"), hba).map_err(|error| error.to_string())
    }

    fn write_certificates(&self) -> Result<(), String> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let failed = |error: rcgen::Error| error.to_string();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(failed)?)
            .map_err(failed)?;
        let server_key = KeyPair::generate().map_err(failed)?;
        let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(failed)?
            .signed_by(&server_key, &ca)
            .map_err(failed)?;
        let write = |name: &str, text: String| {
            std::fs::write(self.dir.join(name), text).map_err(|error| error.to_string())
        };
        write("ca.pem", ca.pem())?;
        write("server.crt", server.pem())?;
        write("server.key", server_key.serialize_pem())?;
        let key = self.dir.join("server.key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|error| error.to_string())?;
        if self.as_postgres {
            for name in ["ca.pem", "server.crt", "server.key"] {
                self.run(
                    Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(self.dir.join(name)),
                    "chown",
                )?;
            }
        }
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str], what: &str) -> Result<(), String> {
        let mut command = self.command(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args);
        self.run(&mut command, what)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) -> Result<(), String> {
        let log = self.dir.join("server.log");
        self.pg_ctl(
            &["-w", "-t", "60", "-l", &log.display().to_string(), "start"],
            "pg_ctl start",
        )
    }

    /// Stops the server (fast shutdown: sessions are ended, nothing committed is lost).
    pub fn stop_server(&self) -> Result<(), String> {
        self.pg_ctl(&["-w", "-m", "fast", "stop"], "pg_ctl stop")
    }

    /// Kills the server like a crash would (immediate shutdown, recovery on the next start).
    pub fn crash_server(&self) -> Result<(), String> {
        self.pg_ctl(
            &["-w", "-m", "immediate", "stop"],
            "pg_ctl stop -m immediate",
        )
    }

    pub fn psql(&self, sql: &str) -> Result<(), String> {
        self.psql_on("postgres", sql)
    }

    pub fn psql_on(&self, database: &str, sql: &str) -> Result<(), String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        self.run(
            Command::new(psql)
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                ])
                .args(["-p", &self.port.to_string(), "-d", database, "-c", sql]),
            "psql",
        )
    }

    /// Stops the cluster and removes its files once this test process has exited.
    fn watch_for_exit(&self) -> Result<(), String> {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; \
             {pg_ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--", "sh", "-c", &script]);
            command
        } else {
            let mut command = Command::new("sh");
            command.args(["-c", &script]);
            command
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .map_err(|error| format!("cannot start the cluster watchdog: {error}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.crash_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server all ordinary tests share: `TEST_DATABASE_URL`, or a cluster started on first use.
pub struct Shared {
    /// Connects as a superuser to a database where schemas may be created.
    pub admin_url: String,
    pub cluster: Option<Cluster>,
}

/// The shared server, or why there is none.
pub fn shared() -> Result<&'static Shared, String> {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(Shared {
                admin_url: url,
                cluster: None,
            }),
            _ => Cluster::start().map(|cluster| Shared {
                admin_url: cluster.url("postgres", ""),
                cluster: Some(cluster),
            }),
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A cluster this process started, with its files (certificates) and users: the shared one, or,
/// when `TEST_DATABASE_URL` names an outside server, one started for the tests that need it.
pub fn local_cluster() -> Result<&'static Cluster, String> {
    static LOCAL: OnceLock<Result<Cluster, String>> = OnceLock::new();
    if let Ok(Shared {
        cluster: Some(cluster),
        ..
    }) = shared()
    {
        return Ok(cluster);
    }
    LOCAL
        .get_or_init(Cluster::start)
        .as_ref()
        .map_err(Clone::clone)
}

/// A test that needs Postgres is `#[ignore]`d unless asked for (`cargo test -- --include-ignored`,
/// which scripts/test passes): asked for, it fails without Postgres rather than pass unrun.
pub fn unavailable(reason: &str) {
    panic!(
        "this test needs PostgreSQL ({reason}): install postgresql (initdb on PATH or under \
         /usr/lib/postgresql) or set TEST_DATABASE_URL"
    );
}

/// A new, empty schema on the shared server, and the `DATABASE_URL` that works in it.
/// A fresh schema's URL, or `None` after saying why there is no Postgres.
pub async fn database() -> Option<String> {
    match fresh_database_url().await {
        Ok(url) => Some(url),
        Err(reason) => {
            unavailable(&reason);
            None
        }
    }
}

pub async fn fresh_database_url() -> Result<String, String> {
    let shared = shared()?;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let schema = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    execute(&shared.admin_url, &format!("CREATE SCHEMA {schema}")).await?;
    Ok(with_search_path(&shared.admin_url, &schema))
}

/// A new schema on the shared server, migrated by the admin with a serving role of its own (as
/// `items-api migrate --app-role` does), and the `DATABASE_URL` that signs in as that role.
pub async fn fresh_app_role_url() -> Result<String, String> {
    let admin_url = fresh_database_url().await?;
    let role = format!("{}_app", schema_of(&admin_url));
    let password = format!("pw-{role}");
    migrate_with_app_role(&admin_url, &role, &password).await?;
    as_user(&admin_url, &role, &password)
}

/// Runs the `migrate` command's work on `admin_url`, granting `role` (created with `password`).
pub async fn migrate_with_app_role(
    admin_url: &str,
    role: &str,
    password: &str,
) -> Result<(), String> {
    let mut config = items_api::Config::with_defaults("unused.db");
    config.database_url = items_api::config::DatabaseUrl(admin_url.to_owned());
    let settings = config.store_settings().map_err(|error| error.0)?;
    let role = items_api::maintenance::AppRole {
        name: role.to_owned(),
        create: items_api::maintenance::RoleCreation::Password(password.to_owned()),
    };
    items_api::maintenance::migrate(&settings, Some(&role))
        .await
        .map(drop)
}

/// `url` signing in as `user` with `password` instead.
pub fn as_user(url: &str, user: &str, password: &str) -> Result<String, String> {
    let mut url = url::Url::parse(url).map_err(|error| error.to_string())?;
    url.set_username(user)
        .and_then(|()| url.set_password(Some(password)))
        .map_err(|()| format!("cannot set the user of {url}"))?;
    Ok(url.to_string())
}

/// The schema a `fresh_database_url` resolves names in.
pub fn schema_of(url: &str) -> String {
    url.rsplit("search_path%3D")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// `url` with every unqualified name resolved in `schema` first.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// Runs `sql` (several statements allowed) on `url`.
pub async fn execute(url: &str, sql: &str) -> Result<(), String> {
    let client = connect(url).await?;
    client
        .batch_execute(sql)
        .await
        .map_err(|error| format!("{sql}: {error}"))
}

/// A plain client (no TLS) for arranging and inspecting test data.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| format!("cannot connect to the test server: {error}"))?;
    tokio::spawn(connection);
    Ok(client)
}

fn find_tool(name: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin").join(name));
    // Debian's wrappers in /usr/bin need a configured cluster; the real binaries come first.
    debian
        .chain(on_path)
        .find(|path| path.is_file())
        .map(|path| path.canonicalize().unwrap_or(path))
        .ok_or_else(|| format!("{name} not found (apt-get install postgresql)"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|error| format!("{}: {error}", path.display()))
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
