//! OpenTelemetry traces from the real binary to an OTLP receiver run by the test (HTTP with
//! protobuf, and gRPC): a server span per request continuing the caller's `traceparent`, a client
//! span per database call under it, the resource, sampling, the flush at shutdown, and the trace id
//! in the access line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::Value;

use crate::helpers::BinaryServer;
use crate::postgres_support;

/// A span as received, with the resource of the batch it came in.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    status_code: i32,
    /// The spans it links to: (trace id, span id).
    links: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        text_of(&self.attributes, key)
    }

    /// An attribute that must be an integer, as the conventions type it.
    fn integer(&self, key: &str) -> Option<i64> {
        let value = self
            .attributes
            .iter()
            .find(|kv| kv.key == key)?
            .value
            .as_ref()?;
        match value.value.as_ref()? {
            AnyValue::IntValue(number) => Some(*number),
            other => panic!("{key} is {other:?}, not an integer"),
        }
    }
}

fn text_of(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(text) => text.clone(),
        AnyValue::IntValue(number) => number.to_string(),
        AnyValue::BoolValue(flag) => flag.to_string(),
        AnyValue::DoubleValue(number) => number.to_string(),
        other => format!("{other:?}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Everything a receiver was sent.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    fn keep(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.0.lock().unwrap();
        for batch in request.resource_spans {
            let resource = batch.resource.map(|r| r.attributes).unwrap_or_default();
            for scope in batch.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: span.attributes,
                        resource: resource.clone(),
                        status_code: span.status.map_or(0, |status| status.code),
                        links: span
                            .links
                            .iter()
                            .map(|link| (hex(&link.trace_id), hex(&link.span_id)))
                            .collect(),
                    });
                }
            }
        }
    }

    /// The first span named `name` (within ten seconds), and every span received by then.
    fn wait_for(&self, name: &str) -> (Received, Vec<Received>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.0.lock().unwrap().clone();
            if let Some(span) = spans.iter().find(|span| span.name == name) {
                return (span.clone(), spans);
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} arrived; got {:?}",
                spans.iter().map(|span| &span.name).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first span that `matches` (within ten seconds).
    fn wait_until(&self, what: &str, matches: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(span) = self.all().into_iter().find(&matches) {
                return span;
            }
            assert!(Instant::now() < deadline, "no {what}; got {:?}", self.all());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all(&self) -> Vec<Received> {
        self.0.lock().unwrap().clone()
    }
}

/// A receiver on a free loopback port, run by `serve` on a runtime of its own so the test's
/// blocking calls never stall it; its URL and what it keeps.
fn receiver<F, Fut>(serve: F) -> (String, Spans)
where
    F: FnOnce(tokio::net::TcpListener, Spans) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let spans = Spans::default();
    let kept = spans.clone();
    let (sender, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            sender.send(listener.local_addr().unwrap()).unwrap();
            serve(listener, kept).await;
        });
    });
    let address: SocketAddr = address.recv().unwrap();
    (format!("http://{address}"), spans)
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf).
fn http_receiver() -> (String, Spans) {
    receiver(|listener, kept| async move {
        let router = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| async move {
                kept.keep(ExportTraceServiceRequest::decode(body).expect("OTLP protobuf"));
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }),
        );
        axum::serve(listener, router).await.unwrap();
    })
}

struct GrpcReceiver(Spans);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.keep(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver.
fn grpc_receiver() -> (String, Spans) {
    receiver(|listener, kept| async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcReceiver(kept)))
            .serve_with_incoming(tokio_stream_of(listener))
            .await
            .unwrap();
    })
}

fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// The service exporting to `endpoint`, sending its batches every 100 ms.
fn traced_service(dir: &tempfile::TempDir, env: &[(&str, &str)]) -> BinaryServer {
    let mut all = vec![
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("BUILD_VERSION", "trace-test"),
    ];
    all.extend_from_slice(env);
    BinaryServer::start(&dir.path().join("app.db"), &all)
}

fn send(
    server: &BinaryServer,
    method: reqwest::Method,
    path: &str,
    traceparent: Option<&str>,
) -> reqwest::blocking::Response {
    let mut request = reqwest::blocking::Client::new()
        .request(method, server.url(path))
        .header("content-type", "application/json")
        .body(r#"{"text":"traced"}"#);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    request.send().expect("the service answers")
}

/// The access line of the request whose path is `path` and method `method`.
fn access_line(server: &BinaryServer, method: &str, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = server
            .output
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["path"] == path && line["method"] == method);
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {method} {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

#[test]
fn a_request_and_its_database_call_are_one_trace_continuing_the_callers_over_http() {
    let (endpoint, spans) = http_receiver();
    let dir = tempfile::tempdir().unwrap();
    let server = traced_service(&dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let created = send(
        &server,
        reqwest::Method::POST,
        "/api/items",
        Some(&traceparent),
    );
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().unwrap()["id"].as_i64().unwrap();

    let (request, all) = spans.wait_for("POST /api/items");
    assert_eq!(request.trace_id, CALLER_TRACE, "the caller's trace goes on");
    assert_eq!(
        request.parent_span_id, CALLER_SPAN,
        "under the caller's span"
    );
    assert_eq!(request.kind, SpanKind::Server as i32);
    assert_eq!(request.integer("http.response.status_code"), Some(201));
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.route", "/api/items"),
        ("url.path", "/api/items"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(request.attribute(key).as_deref(), Some(value), "{key}");
    }
    let resource = |key| text_of(&request.resource, key);
    assert_eq!(resource("service.name").as_deref(), Some("items-api"));
    assert_eq!(resource("service.version").as_deref(), Some("trace-test"));
    assert!(resource("service.instance.id").is_some_and(|id| !id.is_empty()));

    let insert = all
        .iter()
        .find(|span| span.name == "INSERT items" && span.trace_id == CALLER_TRACE)
        .expect("the insert has a span in the same trace");
    assert_eq!(
        insert.parent_span_id, request.span_id,
        "under the request's span"
    );
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(
        insert.attribute("db.system.name").as_deref(),
        Some("sqlite")
    );
    assert_eq!(
        insert.attribute("db.operation.name").as_deref(),
        Some("INSERT")
    );
    assert_eq!(
        insert.attribute("db.collection.name").as_deref(),
        Some("items")
    );

    let logged = access_line(&server, "POST", "/api/items");
    assert_eq!(
        logged["trace_id"], CALLER_TRACE,
        "the access line names the trace"
    );

    // Without a traceparent a trace starts here, and the access line names it.
    let path = format!("/api/items/{id}");
    assert_eq!(
        send(&server, reqwest::Method::GET, &path, None).status(),
        200
    );
    let (read, _) = spans.wait_for("GET /api/items/{id}");
    assert_ne!(read.trace_id, CALLER_TRACE);
    assert!(read.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        access_line(&server, "GET", &path)["trace_id"],
        read.trace_id
    );
    assert!(
        spans
            .all()
            .iter()
            .all(|span| !span.name.contains(&id.to_string())),
        "span names carry the route template, never an id"
    );
}

#[test]
fn spans_go_over_grpc_when_the_protocol_says_so() {
    let (endpoint, spans) = grpc_receiver();
    let dir = tempfile::tempdir().unwrap();
    let server = traced_service(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let response = send(&server, reqwest::Method::GET, "/api/items", None);
    assert_eq!(response.status(), 200);
    let (request, all) = spans.wait_for("GET /api/items");
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(
        all.iter()
            .any(|span| span.name == "SELECT items" && span.parent_span_id == request.span_id),
        "the list's read is a child span: {all:?}"
    );
}

#[test]
fn a_caller_that_did_not_sample_its_trace_is_followed_and_a_missing_page_is_no_error() {
    let (endpoint, spans) = http_receiver();
    let dir = tempfile::tempdir().unwrap();
    let server = traced_service(&dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let unsampled = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00");
    send(
        &server,
        reqwest::Method::GET,
        "/api/items",
        Some(&unsampled),
    );
    let missing = send(&server, reqwest::Method::GET, "/api/items/999999", None);
    assert_eq!(missing.status(), 404);
    let (not_found, _) = spans.wait_for("GET /api/items/{id}");
    assert_eq!(
        not_found.status_code, 0,
        "a 4xx leaves the server span's status unset"
    );
    assert!(
        spans.all().iter().all(|span| span.trace_id != CALLER_TRACE),
        "an unsampled caller's trace is not exported"
    );
    assert_eq!(
        access_line(&server, "GET", "/api/items")["trace_id"],
        CALLER_TRACE,
        "but its id is logged"
    );
}

#[test]
fn spans_still_queued_are_exported_when_the_service_stops() {
    let (endpoint, spans) = http_receiver();
    let dir = tempfile::tempdir().unwrap();
    let mut server = traced_service(
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    assert_eq!(
        send(&server, reqwest::Method::POST, "/api/items", None).status(),
        201
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        spans.all().is_empty(),
        "nothing is sent before the batch is due"
    );
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(20)), 0);
    spans.wait_for("POST /api/items");
}

#[test]
fn a_receiver_that_is_down_slows_no_request_and_no_shutdown() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = traced_service(&dir, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(
            send(&server, reqwest::Method::POST, "/api/items", None).status(),
            201
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "50 writes took {:?}",
        started.elapsed()
    );
    server.signal("TERM");
    assert_eq!(server.wait(Duration::from_secs(20)), 0);
}

#[test]
fn without_an_endpoint_nothing_is_traced_and_the_callers_trace_id_is_still_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(&dir.path().join("app.db"), &[]);
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    send(
        &server,
        reqwest::Method::GET,
        "/api/items",
        Some(&traceparent),
    );
    send(
        &server,
        reqwest::Method::GET,
        "/api/healthz",
        Some("00-not-a-trace-01"),
    );
    assert_eq!(
        access_line(&server, "GET", "/api/items")["trace_id"],
        CALLER_TRACE
    );
    assert!(
        access_line(&server, "GET", "/api/healthz")
            .get("trace_id")
            .is_none(),
        "a malformed traceparent names no trace"
    );
}

#[test]
#[ignore = "needs PostgreSQL: cargo test -- --include-ignored (scripts/test does)"]
fn a_change_passed_on_by_another_replica_links_to_the_trace_of_the_write() {
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(postgres_support::fresh_app_role_url())
        .unwrap_or_else(|reason| {
            postgres_support::unavailable(&reason);
            unreachable!()
        });
    let (endpoint, spans) = http_receiver();
    let dir = tempfile::tempdir().unwrap();
    let replica = |name: &str| {
        traced_service(
            &dir,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_RESOURCE_ATTRIBUTES", &format!("test.replica={name}")),
                ("DATABASE_URL", &url),
            ],
        )
    };
    let (writer, passer) = (replica("writer"), replica("passer"));
    let on = |span: &Received, name: &str| {
        text_of(&span.resource, "test.replica").as_deref() == Some(name)
    };

    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let created = send(
        &writer,
        reqwest::Method::POST,
        "/api/items",
        Some(&traceparent),
    );
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let insert = spans.wait_until("INSERT span of the writer", |span| {
        span.name == "INSERT items" && span.trace_id == CALLER_TRACE && on(span, "writer")
    });
    let arrival = spans.wait_until("arrival of the insert at the other replica", |span| {
        span.name == "receive items_changes"
            && on(span, "passer")
            && span.attribute("items.change").as_deref() == Some("insert")
    });
    assert_eq!(arrival.kind, SpanKind::Consumer as i32);
    assert!(
        arrival
            .integer("items.revision")
            .is_some_and(|revision| revision > 0)
    );
    assert!(insert.integer("server.port").is_some_and(|port| port > 0));
    assert!(arrival.parent_span_id.is_empty(), "a trace of its own");
    assert_eq!(
        arrival.links,
        vec![(CALLER_TRACE.to_owned(), insert.span_id.clone())],
        "linked to the write's database span"
    );

    let deleting = "00-1bf7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01";
    let path = format!("/api/items/{id}");
    assert_eq!(
        send(&writer, reqwest::Method::DELETE, &path, Some(deleting)).status(),
        204
    );
    let arrival = spans.wait_until("arrival of the delete", |span| {
        span.name == "receive items_changes"
            && on(span, "passer")
            && span.attribute("items.change").as_deref() == Some("delete")
    });
    assert_eq!(arrival.links.len(), 1);
    assert_eq!(arrival.links[0].0, "1bf7651916cd43dd8448eb211c80319c");
    drop(passer);
}
