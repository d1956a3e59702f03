//! `items-api healthcheck`: a tiny HTTP client for container health checks (no shell, no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::http::{Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const PATH: &str = "/api/healthz";

/// Where to reach a server bound to `bind_addr` from the same host: a wildcard bind
/// (0.0.0.0 or ::) is reached on loopback.
pub fn local_target(bind_addr: SocketAddr) -> SocketAddr {
    let ip = match bind_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind_addr.port())
}

/// `Ok` when `GET /api/healthz` answers 200 within `timeout`; otherwise why not.
pub async fn probe(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let stream = TcpStream::connect(target)
            .await
            .map_err(|error| format!("cannot connect to {target}: {error}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP handshake with {target} failed: {error}"))?;
        tokio::spawn(connection);
        let request = Request::get(PATH)
            .header(header::HOST, target.to_string())
            .header(header::USER_AGENT, "items-api-healthcheck")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("no HTTP answer from {target}: {error}"))?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(format!("http://{target}{PATH} answered {status}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {target} within {} ms",
                timeout.as_millis()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert_eq!(local_target(v4).to_string(), "127.0.0.1:8000");
        let v6: SocketAddr = "[::]:9000".parse().unwrap();
        assert_eq!(local_target(v6).to_string(), "[::1]:9000");
        let specific: SocketAddr = "10.1.2.3:80".parse().unwrap();
        assert_eq!(local_target(specific), specific);
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = probe(addr, Duration::from_secs(2)).await.unwrap_err();
        assert!(error.contains("cannot connect"), "{error}");
    }
}
