//! `RequireHostLayer`: the `Host` header rule of RFC 9112 §3.2, answered with a JSON 400.

use std::future::Ready;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::HOST;
use axum::http::{StatusCode, Version};
use axum::response::Response;
use futures_util::future::Either;
use tower::{Layer, Service};

use crate::http::error::detail_response;

/// Refuses an HTTP/1.1 request without a `Host` header, and any request with more than one.
/// HTTP/1.0 predates the header, so a request of that version may come without it.
#[derive(Debug, Clone, Copy)]
pub struct RequireHostLayer;

impl<S> Layer<S> for RequireHostLayer {
    type Service = RequireHost<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireHost { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequireHost<S> {
    inner: S,
}

impl<S> Service<Request> for RequireHost<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    // No boxing: a refusal is ready at once, anything else is the inner service's own future.
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match host_problem(&request) {
            Some(problem) => Either::Left(std::future::ready(Ok(detail_response(
                StatusCode::BAD_REQUEST,
                problem,
            )))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

fn host_problem(request: &Request) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Some("More than one Host header"),
        (None, None) if request.version() == Version::HTTP_11 => {
            Some("An HTTP/1.1 request needs a Host header")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, hosts: &[&str]) -> Request {
        let mut request = Request::new(axum::body::Body::empty());
        *request.version_mut() = version;
        for host in hosts {
            request
                .headers_mut()
                .append(HOST, host.parse().expect("a header value"));
        }
        request
    }

    #[test]
    fn http11_needs_exactly_one_host_and_http10_at_most_one() {
        assert_eq!(host_problem(&request(Version::HTTP_11, &["a"])), None);
        assert_eq!(host_problem(&request(Version::HTTP_10, &[])), None);
        assert_eq!(host_problem(&request(Version::HTTP_10, &["a"])), None);
        assert!(host_problem(&request(Version::HTTP_11, &[])).is_some());
        assert!(host_problem(&request(Version::HTTP_11, &["a", "a"])).is_some());
        assert!(host_problem(&request(Version::HTTP_10, &["a", "b"])).is_some());
    }
}
