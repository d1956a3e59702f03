//! Passwordless sign-in to Azure Database for PostgreSQL: an Entra ID access token, used as the
//! password of each new connection, from one of two places:
//!
//! - `ManagedIdentity`: the managed identity endpoint that Azure Container Apps provides
//!   (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`);
//! - `WorkloadIdentity`: AKS workload identity. Kubernetes projects a service account token into
//!   the pod (`AZURE_FEDERATED_TOKEN_FILE`); Entra ID trusts it through a federated credential and
//!   exchanges it for a token of the identity `AZURE_CLIENT_ID` (OAuth 2.0 client credentials
//!   with a JWT assertion, at `AZURE_AUTHORITY_HOST` for `AZURE_TENANT_ID`).
//!
//! A token is reused while it stays valid for at least `MIN_VALIDITY` more (the server only checks
//! it when a connection opens); after that the next connection fetches a new one.

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The resource Azure Database for PostgreSQL accepts tokens for.
pub const RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
/// The same resource as an OAuth 2.0 scope (Entra ID's v2 endpoint).
pub const SCOPE: &str = "https://ossrdbms-aad.database.windows.net/.default";
const API_VERSION: &str = "2019-08-01";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const MIN_VALIDITY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a sign-in token comes from.
#[derive(Debug, Clone)]
pub enum EntraIdentity {
    Managed(ManagedIdentity),
    Workload(WorkloadIdentity),
}

impl EntraIdentity {
    /// A token valid for at least a few more minutes: the one held, or a new one.
    pub async fn token(&self) -> Result<String, String> {
        match self {
            Self::Managed(identity) => identity.token().await,
            Self::Workload(identity) => identity.token().await,
        }
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        match self {
            Self::Managed(identity) => identity.cache.last_error(),
            Self::Workload(identity) => identity.cache.last_error(),
        }
    }
}

/// The token held and the last failure, shared by the clones a pool's connector holds.
#[derive(Clone, Default)]
struct Cache(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    token: Option<(String, SystemTime)>,
    last_error: Option<String>,
}

impl Cache {
    /// The token held while it has `MIN_VALIDITY` left, else what `fetch` gets (`what` names the
    /// source in errors).
    async fn token(
        &self,
        what: &str,
        fetch: impl Future<Output = Result<(String, SystemTime), String>>,
    ) -> Result<String, String> {
        let now = SystemTime::now();
        if let Some((token, expires)) = &self.lock().token
            && *expires > now + MIN_VALIDITY
        {
            return Ok(token.clone());
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, fetch)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))
            .map_err(|error| format!("cannot get a {what} token: {error}"));
        let mut state = self.lock();
        match fetched {
            Ok((token, expires)) => {
                state.token = Some((token.clone(), expires));
                state.last_error = None;
                Ok(token)
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }

    fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where and as whom to ask the Container Apps identity endpoint for tokens.
#[derive(Clone)]
pub struct ManagedIdentity {
    endpoint: Uri,
    secret: String,
    /// A user-assigned identity's client id; `None` for the system-assigned identity.
    client_id: Option<String>,
    cache: Cache,
}

#[derive(Deserialize)]
struct ManagedIdentityToken {
    access_token: String,
    /// Seconds since the epoch, as a string (App Service, Container Apps) or a number.
    expires_on: serde_json::Value,
}

impl std::fmt::Debug for ManagedIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ManagedIdentity")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentity {
    /// Checks the endpoint: plain `http://` (it is local to the container), with a host.
    pub fn new(endpoint: &str, secret: &str, client_id: Option<&str>) -> Result<Self, String> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|_| "IDENTITY_ENDPOINT is not a URL".to_owned())?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "IDENTITY_ENDPOINT must be an http:// URL with a host, not {endpoint:?}"
            ));
        }
        if secret.is_empty() {
            return Err("IDENTITY_HEADER is empty".into());
        }
        Ok(Self {
            endpoint: uri,
            secret: secret.to_owned(),
            client_id: client_id.filter(|id| !id.is_empty()).map(str::to_owned),
            cache: Cache::default(),
        })
    }

    /// A token valid for at least a few more minutes: the one held, or a new one.
    pub async fn token(&self) -> Result<String, String> {
        self.cache.token("managed identity", self.fetch()).await
    }

    async fn fetch(&self) -> Result<(String, SystemTime), String> {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("api-version", API_VERSION);
            query.append_pair("resource", RESOURCE);
            if let Some(client_id) = &self.client_id {
                query.append_pair("client_id", client_id);
            }
            query.finish()
        };
        let separator = if self.endpoint.query().is_some() {
            '&'
        } else {
            '?'
        };
        let path = format!(
            "{}{separator}{}",
            self.endpoint
                .path_and_query()
                .map_or("/", |path| path.as_str()),
            query
        );
        let request = Request::get(path)
            .header(header::HOST, host_header(&self.endpoint))
            .header("X-IDENTITY-HEADER", &self.secret)
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let body = answer_of(&self.endpoint, request).await?;
        let token: ManagedIdentityToken =
            serde_json::from_slice(&body).map_err(|error| format!("unexpected answer: {error}"))?;
        let expires_on = seconds(&token.expires_on).ok_or("unexpected answer: no expires_on")?;
        Ok((
            token.access_token,
            UNIX_EPOCH + Duration::from_secs(expires_on),
        ))
    }
}

/// AKS workload identity: the projected service account token, exchanged at Entra ID.
#[derive(Clone)]
pub struct WorkloadIdentity {
    token_url: Uri,
    client_id: String,
    token_file: PathBuf,
    cache: Cache,
}

#[derive(Deserialize)]
struct EntraToken {
    access_token: String,
    /// Seconds from now, a number (sometimes sent as a string).
    expires_in: serde_json::Value,
}

/// The assertion in the file is a credential: only where it is read from is shown.
impl std::fmt::Debug for WorkloadIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WorkloadIdentity")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("token_file", &self.token_file)
            .finish_non_exhaustive()
    }
}

impl WorkloadIdentity {
    /// Checks the settings and that the token file can be read now. The authority must be
    /// `https://`; plain `http://` only to this machine (a stand-in), never across a network, since
    /// the request carries the assertion.
    pub fn new(
        authority_host: &str,
        tenant_id: &str,
        client_id: &str,
        token_file: &Path,
    ) -> Result<Self, String> {
        let authority: Uri = authority_host
            .parse()
            .map_err(|_| format!("AZURE_AUTHORITY_HOST is not a URL: {authority_host:?}"))?;
        let host = authority.host().map(unbracketed).unwrap_or_default();
        let allowed = match authority.scheme_str() {
            Some("https") => !host.is_empty(),
            Some("http") => is_loopback(host),
            _ => false,
        };
        if !allowed {
            return Err(format!(
                "AZURE_AUTHORITY_HOST must be an https:// URL (http:// only to this machine), not {authority_host:?}"
            ));
        }
        // A tenant id is a GUID or a domain name; anything else would change the URL's path.
        if tenant_id.is_empty()
            || !tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(format!(
                "AZURE_TENANT_ID must be a tenant GUID or domain name, not {tenant_id:?}"
            ));
        }
        if client_id.is_empty() {
            return Err("AZURE_CLIENT_ID is empty".into());
        }
        read_assertion(token_file)?;
        let token_url = format!(
            "{}/{tenant_id}/oauth2/v2.0/token",
            authority_host.trim_end_matches('/')
        )
        .parse()
        .map_err(|_| format!("AZURE_AUTHORITY_HOST is not a URL: {authority_host:?}"))?;
        Ok(Self {
            token_url,
            client_id: client_id.to_owned(),
            token_file: token_file.to_owned(),
            cache: Cache::default(),
        })
    }

    /// A token valid for at least a few more minutes: the one held, or a new one.
    pub async fn token(&self) -> Result<String, String> {
        self.cache.token("workload identity", self.fetch()).await
    }

    async fn fetch(&self) -> Result<(String, SystemTime), String> {
        // Read for every exchange: the kubelet replaces the projected token before it expires.
        let assertion = read_assertion(&self.token_file)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", SCOPE)
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_assertion_type", ASSERTION_TYPE)
            .append_pair("client_assertion", &assertion)
            .finish();
        let path = self
            .token_url
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        let request = Request::post(path)
            .header(header::HOST, host_header(&self.token_url))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|error| error.to_string())?;
        let asked = SystemTime::now();
        let body = answer_of(&self.token_url, request).await?;
        let token: EntraToken =
            serde_json::from_slice(&body).map_err(|error| format!("unexpected answer: {error}"))?;
        let expires_in = seconds(&token.expires_in).ok_or("unexpected answer: no expires_in")?;
        Ok((token.access_token, asked + Duration::from_secs(expires_in)))
    }
}

/// The projected token, without the line end a file may add; its content is never shown.
fn read_assertion(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "AZURE_FEDERATED_TOKEN_FILE {} cannot be read: {error}",
            path.display()
        )
    })?;
    let assertion = text.trim();
    if assertion.is_empty() {
        return Err(format!(
            "AZURE_FEDERATED_TOKEN_FILE {} is empty",
            path.display()
        ));
    }
    Ok(assertion.to_owned())
}

/// A count of seconds, as a number or a string of digits.
fn seconds(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(text) => text.parse().ok(),
        serde_json::Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

fn unbracketed(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_port(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        })
}

fn host_header(uri: &Uri) -> String {
    let host = uri.host().unwrap_or_default();
    match uri.port_u16() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// One request on a connection of its own (over TLS for `https://`); the body of a 200 answer,
/// else an error with the status and the start of the body.
async fn answer_of<B>(uri: &Uri, request: Request<B>) -> Result<Bytes, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = uri.host().map(unbracketed).unwrap_or_default();
    let stream = TcpStream::connect((host, default_port(uri)))
        .await
        .map_err(|error| format!("cannot connect to {uri}: {error}"))?;
    let (status, body) = if uri.scheme_str() == Some("https") {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|error| format!("{host} cannot be checked against a certificate: {error}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls_config()))
            .connect(name, stream)
            .await
            .map_err(|error| format!("TLS with {uri} failed: {error}"))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(stream), request).await?
    };
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "the endpoint answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ));
    }
    Ok(body)
}

async fn send<I, B>(io: I, request: Request<B>) -> Result<(StatusCode, Bytes), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Certificates checked against the compiled-in Mozilla roots, as `sslrootcert=system` does.
fn tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::settings::DEFAULT_AUTHORITY_HOST;

    #[test]
    fn the_endpoint_must_be_local_http_with_a_secret() {
        assert!(ManagedIdentity::new("http://localhost:42356/msi/token", "s", None).is_ok());
        for (endpoint, secret) in [
            ("https://login.example/token", "s"),
            ("not a url", "s"),
            ("http://localhost:42356/msi/token", ""),
        ] {
            assert!(
                ManagedIdentity::new(endpoint, secret, None).is_err(),
                "{endpoint}"
            );
        }
    }

    fn token_file(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("azure-identity-token");
        std::fs::write(&file, content).unwrap();
        (dir, file)
    }

    #[test]
    fn workload_identity_asks_the_tenants_v2_token_endpoint_of_the_authority() {
        let (_dir, file) = token_file("header.payload.signature\n");
        for host in [
            "https://login.microsoftonline.com/",
            "https://login.microsoftonline.com",
        ] {
            let identity = WorkloadIdentity::new(host, "tenant-1", "client-1", &file).unwrap();
            assert_eq!(
                identity.token_url.to_string(),
                "https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token"
            );
        }
    }

    #[test]
    fn workload_identity_sends_the_assertion_over_https_or_to_this_machine_only() {
        let (_dir, file) = token_file("jwt");
        for host in [
            "http://127.0.0.1:8081/",
            "http://localhost:8081/",
            "http://[::1]:8081/",
        ] {
            assert!(
                WorkloadIdentity::new(host, "t", "c", &file).is_ok(),
                "{host}"
            );
        }
        for host in [
            "http://login.microsoftonline.com/",
            "http://10.0.0.1/",
            "ftp://login.microsoftonline.com/",
            "not a url",
        ] {
            let error = WorkloadIdentity::new(host, "t", "c", &file).unwrap_err();
            assert!(error.starts_with("AZURE_AUTHORITY_HOST"), "{host}: {error}");
        }
    }

    #[test]
    fn workload_identity_refuses_a_bad_tenant_an_empty_client_and_an_unusable_file() {
        let (dir, file) = token_file("jwt");
        let host = DEFAULT_AUTHORITY_HOST;
        let error = WorkloadIdentity::new(host, "a/../b", "c", &file).unwrap_err();
        assert!(error.starts_with("AZURE_TENANT_ID"), "{error}");
        let error = WorkloadIdentity::new(host, "t", "", &file).unwrap_err();
        assert!(error.starts_with("AZURE_CLIENT_ID"), "{error}");
        let missing = dir.path().join("missing");
        let error = WorkloadIdentity::new(host, "t", "c", &missing).unwrap_err();
        assert!(error.starts_with("AZURE_FEDERATED_TOKEN_FILE"), "{error}");
        let (_empty_dir, empty) = token_file(" \n");
        let error = WorkloadIdentity::new(host, "t", "c", &empty).unwrap_err();
        assert!(error.ends_with("is empty"), "{error}");
    }

    #[tokio::test]
    async fn workload_identity_refuses_an_authority_whose_certificate_no_trusted_root_vouches_for()
    {
        use tokio::io::AsyncReadExt;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                if let Ok(mut stream) = acceptor.accept(socket).await {
                    let _ = stream.read(&mut [0; 1024]).await;
                }
            }
        });
        let (_dir, file) = token_file("jwt");
        let identity =
            WorkloadIdentity::new(&format!("https://localhost:{port}/"), "t", "c", &file).unwrap();
        let error = identity.token().await.unwrap_err();
        assert!(
            error.starts_with("cannot get a workload identity token: TLS with")
                && error.contains("UnknownIssuer"),
            "{error}"
        );
    }

    #[test]
    fn workload_identity_debug_output_never_shows_the_assertion() {
        let (_dir, file) = token_file("secret-assertion");
        let identity =
            WorkloadIdentity::new(DEFAULT_AUTHORITY_HOST, "t", "client-1", &file).unwrap();
        let shown = format!("{:?}", EntraIdentity::Workload(identity));
        assert!(
            shown.contains("client-1") && !shown.contains("secret-assertion"),
            "{shown}"
        );
    }
}
