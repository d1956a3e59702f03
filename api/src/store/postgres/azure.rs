//! Passwordless sign-in to Azure Database for PostgreSQL: an Entra ID access token from the
//! managed identity endpoint that Azure Container Apps provides (`IDENTITY_ENDPOINT`,
//! `IDENTITY_HEADER`), used as the password of each new connection.
//!
//! A token is reused while it stays valid for at least `MIN_VALIDITY` more (the server only checks
//! it when a connection opens); after that the next connection fetches a new one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The resource Azure Database for PostgreSQL accepts tokens for.
pub const RESOURCE: &str = "https://ossrdbms-aad.database.windows.net";
const API_VERSION: &str = "2019-08-01";
const MIN_VALIDITY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to ask for tokens.
#[derive(Clone)]
pub struct ManagedIdentity {
    endpoint: Uri,
    secret: String,
    /// A user-assigned identity's client id; `None` for the system-assigned identity.
    client_id: Option<String>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    token: Option<(String, SystemTime)>,
    last_error: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
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
            state: Arc::default(),
        })
    }

    /// A token valid for at least a few more minutes: the one held, or a new one.
    pub async fn token(&self) -> Result<String, String> {
        let now = SystemTime::now();
        if let Some((token, expires)) = &self.lock().token
            && *expires > now + MIN_VALIDITY
        {
            return Ok(token.clone());
        }
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))
            .map_err(|error| format!("cannot get a managed identity token: {error}"));
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

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
        let host = self.endpoint.host().unwrap_or_default();
        let port = self.endpoint.port_u16().unwrap_or(80);
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", self.endpoint))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, format!("{host}:{port}"))
            .header("X-IDENTITY-HEADER", &self.secret)
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
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
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "the endpoint answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        let token: TokenResponse =
            serde_json::from_slice(&body).map_err(|error| format!("unexpected answer: {error}"))?;
        let expires_on = match &token.expires_on {
            serde_json::Value::String(text) => text.parse::<u64>().ok(),
            serde_json::Value::Number(number) => number.as_u64(),
            _ => None,
        }
        .ok_or("unexpected answer: no expires_on")?;
        Ok((
            token.access_token,
            UNIX_EPOCH + Duration::from_secs(expires_on),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
