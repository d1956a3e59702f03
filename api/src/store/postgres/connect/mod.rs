//! How to reach the Postgres server: the URL (libpq's form), the password, and TLS with rustls.
//!
//! `sslmode` follows libpq: `disable` (plain), `prefer` (TLS when the server offers it, not
//! verified; the default), `require` (TLS, not verified unless `sslrootcert` is given, then like
//! `verify-ca`), `verify-ca` (the chain must lead to a trusted root), `verify-full` (and the
//! certificate must name the host). Trusted roots are the file `sslrootcert` names, or the
//! compiled-in Mozilla roots (`sslrootcert=system`, or none given).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Connect;
use futures_util::future::BoxFuture;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, SslMode as DriverSslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

pub mod azure;

use azure::{EntraIdentity, ManagedIdentity, WorkloadIdentity};

use crate::store::settings::SignIn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const CHOICES: &str = "disable, prefer, require, verify-ca or verify-full";

    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where each new connection's password comes from.
#[derive(Clone)]
enum Password {
    /// In the URL, or none at all.
    InUrl,
    /// Read again for every new connection, so a rotated secret is picked up without a
    /// restart; the last good value is kept if the file cannot be read.
    File {
        path: PathBuf,
        last: Arc<Mutex<String>>,
    },
    Token(EntraIdentity),
}

/// A Postgres server and database to connect to, checked when parsed.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    /// Certificates from `sslrootcert`; `None` means the compiled-in roots.
    roots: Option<Arc<Vec<CertificateDer<'static>>>>,
    password: Password,
}

impl Target {
    /// Parses `postgres://` / `postgresql://` URLs as libpq does. Errors name the problem, never the
    /// password.
    /// `setting` names where the URL came from (`DATABASE_URL`, `--from`, ...) in messages.
    pub fn parse(url: &str, setting: &str, sign_in: &SignIn) -> Result<Self, String> {
        // The driver only knows the lowercase schemes.
        let url = match url.split_once("://") {
            Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            None => url.to_owned(),
        };
        let (base, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut ssl_mode = SslMode::Prefer;
        let mut root_file = None;
        // `sslmode` and `sslrootcert` are handled here (the driver knows fewer modes); the rest
        // goes to the driver as written.
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = |text: &str| {
                percent_decode(text)
                    .ok_or_else(|| format!("{setting} has a malformed %-escape in its parameters"))
            };
            match decoded(key)?.as_str() {
                "sslmode" => {
                    let value = decoded(value)?;
                    ssl_mode = SslMode::parse(&value).ok_or_else(|| {
                        format!(
                            "{setting} has an unknown sslmode {value:?}: use {}",
                            SslMode::CHOICES
                        )
                    })?;
                }
                "sslrootcert" => root_file = Some(decoded(value)?),
                _ => passed_on.push(pair),
            }
        }
        let rebuilt = if passed_on.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", passed_on.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&rebuilt)
            .map_err(|error| format!("{setting} is not a valid Postgres URL: {error}"))?;
        if config.get_hosts().is_empty() {
            return Err(format!(
                "{setting} names no host (postgres://USER@HOST:PORT/DATABASE)"
            ));
        }
        if config.get_user().is_none_or(str::is_empty) {
            return Err(format!(
                "{setting} names no user (postgres://USER@HOST:PORT/DATABASE)"
            ));
        }
        if config.get_application_name().is_none() {
            config.application_name("items-api");
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        if ssl_mode == SslMode::Require && root_file.as_deref().is_some_and(|file| file != "system")
        {
            // libpq: with a root certificate given, `require` verifies the chain.
            ssl_mode = SslMode::VerifyCa;
        }
        let roots = match root_file.as_deref() {
            None | Some("system") => None,
            Some(file) => Some(Arc::new(read_certificates(setting, Path::new(file))?)),
        };
        let password = match (config.get_password(), sign_in) {
            (None, SignIn::Password { file: Some(path) }) => {
                let password = read_password(path)?;
                Password::File {
                    path: path.clone(),
                    last: Arc::new(Mutex::new(password)),
                }
            }
            (
                None,
                SignIn::ManagedIdentity {
                    endpoint,
                    secret,
                    client_id,
                },
            ) => Password::Token(EntraIdentity::Managed(ManagedIdentity::new(
                endpoint,
                secret,
                client_id.as_deref(),
            )?)),
            (
                None,
                SignIn::WorkloadIdentity {
                    authority_host,
                    tenant_id,
                    client_id,
                    token_file,
                },
            ) => Password::Token(EntraIdentity::Workload(WorkloadIdentity::new(
                authority_host,
                tenant_id,
                client_id,
                token_file,
            )?)),
            _ => Password::InUrl,
        };
        Ok(Self {
            config,
            ssl_mode,
            roots,
            password,
        })
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Why the last sign-in token could not be had, when tokens are used and one could not.
    pub fn credential_error(&self) -> Option<String> {
        match &self.password {
            Password::Token(identity) => identity.last_error(),
            _ => None,
        }
    }

    /// The driver's settings, with the connect timeout applied unless the URL sets its own.
    pub(super) fn driver_config(
        &self,
        connect_timeout: std::time::Duration,
    ) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        // Notice a vanished server on idle pooled connections within about a minute.
        config.keepalives_idle(std::time::Duration::from_secs(30));
        config
    }

    /// The TLS connector `sslmode` asks for.
    pub(super) fn tls(&self) -> MakeRustlsConnect {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions");
        let verifier: Arc<dyn ServerCertVerifier> = match self.ssl_mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }),
            SslMode::VerifyCa => Arc::new(ChainOnly(self.webpki_verifier(&provider))),
            SslMode::VerifyFull => self.webpki_verifier(&provider),
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        MakeRustlsConnect::new(config)
    }

    fn webpki_verifier(&self, provider: &Arc<CryptoProvider>) -> Arc<WebPkiServerVerifier> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Some(certificates) => {
                // Checked when the URL was parsed: every certificate was readable.
                let (_added, _ignored) =
                    store.add_parsable_certificates(certificates.iter().cloned());
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(provider))
            .build()
            .expect("a root store with at least one certificate builds a verifier")
    }

    /// Connects pooled connections, reading a password file afresh each time.
    pub(super) fn connector(&self) -> Connector {
        Connector {
            tls: self.tls(),
            password: self.password.clone(),
        }
    }
}

/// One connection outside any pool, for the maintenance commands; the task driving it ends when
/// it is dropped.
pub struct DirectConnection {
    pub client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl DirectConnection {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

    pub async fn open(target: &Target) -> Result<Self, String> {
        let (client, driver) = target
            .connector()
            .connect(&target.driver_config(Self::TIMEOUT))
            .await
            .map_err(|error| {
                format!(
                    "cannot connect to {target}: {}",
                    crate::store::error_chain(&error)
                )
            })?;
        Ok(Self { client, driver })
    }
}

impl Drop for DirectConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// `postgres://user@host:port/database` (the password never shown).
impl Target {
    /// The database's name and its first server, as spans name them.
    pub fn database_and_server(&self) -> (String, Option<(String, u16)>) {
        let user = self.config.get_user().unwrap_or_default();
        let database = self.config.get_dbname().unwrap_or(user).to_owned();
        let server = self.config.get_hosts().first().map(|host| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            (
                host,
                self.config.get_ports().first().copied().unwrap_or(5432),
            )
        });
        (database, server)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.config.get_user().unwrap_or_default();
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(index, host)| {
                let host = match host {
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(path) => path.display().to_string(),
                };
                match self
                    .config
                    .get_ports()
                    .get(index)
                    .or(self.config.get_ports().first())
                {
                    Some(port) => format!("{host}:{port}"),
                    None => host,
                }
            })
            .collect();
        let database = self.config.get_dbname().unwrap_or(user);
        write!(
            formatter,
            "postgres://{user}@{}/{database}",
            hosts.join(",")
        )
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Target")
            .field("url", &self.to_string())
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "DATABASE_PASSWORD_FILE {} cannot be read: {error}",
            path.display()
        )
    })?;
    // Secret files usually end with a newline that is not part of the password.
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_certificates(setting: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |reason: String| {
        format!(
            "{setting}'s sslrootcert {} cannot be used: {reason}",
            path.display()
        )
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| unreadable(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(error.to_string()))?;
    if certificates.is_empty() {
        return Err(unreadable("it holds no PEM certificate".into()));
    }
    let mut store = RootCertStore::empty();
    let (_, ignored) = store.add_parsable_certificates(certificates.iter().cloned());
    if ignored > 0 {
        return Err(unreadable(format!(
            "{ignored} certificate(s) in it do not parse"
        )));
    }
    Ok(certificates)
}

/// `%XX` escapes decoded, as libpq reads URL parameters.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `prefer` and `require` without a root: encrypted, but whoever answers is accepted (libpq's
/// behaviour). The handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A connection to drive, as the driver hands it out with our TLS.
pub(super) type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream,
>;

/// Opens connections, for the pool and for listening.
pub(super) struct Connector {
    tls: MakeRustlsConnect,
    password: Password,
}

impl Connector {
    /// Opens one connection with the current password; the caller drives `Connection`.
    pub(super) fn open(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<'static, Result<(tokio_postgres::Client, Connection), tokio_postgres::Error>>
    {
        let mut config = config.clone();
        if let Password::File { path, last } = &self.password {
            let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
            match read_password(path) {
                Ok(password) => *last = password,
                Err(error) => tracing::warn!(%error, "using the password read before"),
            }
            config.password(last.as_bytes());
        }
        let identity = match &self.password {
            Password::Token(identity) => Some(identity.clone()),
            _ => None,
        };
        let tls = self.tls.clone();
        Box::pin(async move {
            if let Some(identity) = identity {
                // Without a token the server refuses the sign-in; readiness shows why.
                match identity.token().await {
                    Ok(token) => {
                        config.password(token);
                    }
                    Err(error) => tracing::error!(%error, "connecting without a token"),
                }
            }
            config.connect(tls).await
        })
    }
}

impl Connect for Connector {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> BoxFuture<'_, Result<(tokio_postgres::Client, JoinHandle<()>), tokio_postgres::Error>>
    {
        let opening = self.open(config);
        Box::pin(async move {
            let (client, connection) = opening.await?;
            let task = tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "database connection closed");
                }
            });
            Ok((client, task))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_url_keeps_its_parts_and_never_shows_the_password() {
        let target = Target::parse(
            "postgresql://app:s3cr%40t@db.internal:6432/items?sslmode=require",
            "DATABASE_URL",
            &SignIn::default(),
        )
        .unwrap();
        assert_eq!(target.to_string(), "postgres://app@db.internal:6432/items");
        assert_eq!(target.ssl_mode(), SslMode::Require);
        assert_eq!(target.config.get_password(), Some(&b"s3cr@t"[..]));
        assert!(!format!("{target:?}").contains("s3cr"));
    }

    #[test]
    fn sslmode_defaults_to_prefer_and_every_libpq_verifying_mode_is_known() {
        let mode = |url: &str| {
            Target::parse(url, "DATABASE_URL", &SignIn::default())
                .unwrap()
                .ssl_mode()
        };
        assert_eq!(mode("postgres://app@db/items"), SslMode::Prefer);
        assert_eq!(
            mode("postgres://app@db/items?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://app@db/items?sslmode=verify-ca"),
            SslMode::VerifyCa
        );
        assert_eq!(
            mode("postgres://app@db/items?sslmode=verify-full"),
            SslMode::VerifyFull
        );
    }

    #[test]
    fn an_unknown_sslmode_is_refused_with_the_choices() {
        let error = Target::parse(
            "postgres://app:pw@db/items?sslmode=maybe",
            "DATABASE_URL",
            &SignIn::default(),
        )
        .unwrap_err();
        assert!(error.contains("unknown sslmode \"maybe\""), "{error}");
        assert!(error.contains("verify-full"), "{error}");
        assert!(!error.contains("pw"), "{error}");
    }

    #[test]
    fn malformed_urls_are_refused_without_the_password() {
        for url in [
            "postgres://app:hunter2@db:notaport/items",
            "postgres://app:hunter2@/items",
            "postgres://:hunter2@db/items",
            "postgres://app:hunter2@db/items?nosuchoption=1",
            "postgres://app:hunter2@db/items?sslmode=%zz",
        ] {
            let error = Target::parse(url, "DATABASE_URL", &SignIn::default()).unwrap_err();
            assert!(error.starts_with("DATABASE_URL"), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{url}: {error}");
        }
    }

    #[test]
    fn other_parameters_reach_the_driver() {
        let target = Target::parse(
            "postgres://app@db/items?application_name=worker&connect_timeout=3&options=-c%20search_path%3Dt1",
            "DATABASE_URL",
            &SignIn::default(),
        )
        .unwrap();
        assert_eq!(target.config.get_application_name(), Some("worker"));
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(target.config.get_options(), Some("-c search_path=t1"));
    }

    #[test]
    fn the_password_file_fills_in_a_missing_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let target = Target::parse(
            "postgres://app@db/items",
            "DATABASE_URL",
            &SignIn::Password {
                file: Some(file.clone()),
            },
        )
        .unwrap();
        assert!(
            matches!(&target.password, Password::File { last, .. } if *last.lock().unwrap() == "from-file")
        );
        let target = Target::parse(
            "postgres://app:inline@db/items",
            "DATABASE_URL",
            &SignIn::Password {
                file: Some(file.clone()),
            },
        )
        .unwrap();
        assert!(matches!(target.password, Password::InUrl));
        let error = Target::parse(
            "postgres://app@db/items",
            "DATABASE_URL",
            &SignIn::Password {
                file: Some(dir.path().join("missing")),
            },
        )
        .unwrap_err();
        assert!(error.starts_with("DATABASE_PASSWORD_FILE"), "{error}");
    }

    #[test]
    fn a_missing_or_empty_root_certificate_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for file in [empty, dir.path().join("missing.pem")] {
            let url = format!(
                "postgres://app@db/items?sslmode=verify-full&sslrootcert={}",
                file.display()
            );
            let error = Target::parse(&url, "DATABASE_URL", &SignIn::default()).unwrap_err();
            assert!(error.contains("sslrootcert"), "{error}");
        }
    }

    #[test]
    fn require_with_a_root_certificate_verifies_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["db".into()]).unwrap();
        let file = dir.path().join("root.pem");
        std::fs::write(&file, ca.cert.pem()).unwrap();
        let url = format!(
            "postgres://app@db/items?sslmode=require&sslrootcert={}",
            file.display()
        );
        assert_eq!(
            Target::parse(&url, "DATABASE_URL", &SignIn::default())
                .unwrap()
                .ssl_mode(),
            SslMode::VerifyCa
        );
    }
}
