//! The OpenTelemetry trace export: an OTLP exporter (HTTP with protobuf, or gRPC) behind the SDK's
//! batch processor, the resource that names this service, the sampler, and reading a caller's
//! W3C `traceparent`.
//!
//! The batch processor exports from a thread of its own, outside the async runtime: the HTTP
//! client below hands each export to the runtime, and gRPC's channel is built on it. Exports never
//! run on a request's path; a receiver that is down costs dropped spans, not slower answers.

use std::time::Duration;

use axum::http::HeaderMap;
use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::tonic_types::transport::ClientTlsConfig;
use opentelemetry_otlp::{
    Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::config::{OtlpProtocol, TraceConfig, TraceExport, TraceSampler};

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "items-api";

/// What the spans say about the process that made them.
pub struct ServiceIdentity<'a> {
    pub version: &'a str,
    pub instance: &'a str,
}

/// The tracer provider exporting to the configured receiver, or `None` when no traces are
/// recorded. Must run inside the async runtime, which exports until the provider is shut down.
pub fn start(
    config: &TraceConfig,
    service: &ServiceIdentity<'_>,
) -> Result<Option<SdkTracerProvider>, String> {
    let Some(export) = config.export() else {
        return Ok(None);
    };
    let exporter = exporter(&export).map_err(|error| {
        format!(
            "cannot export traces to {} ({}): {error}",
            export.endpoint,
            protocol_name(export.protocol)
        )
    })?;
    let batches = BatchConfigBuilder::default()
        .with_scheduled_delay(Duration::from_millis(config.schedule_delay_ms))
        .with_max_queue_size(usize::try_from(config.max_queue_size).unwrap_or(usize::MAX))
        .with_max_export_batch_size(
            usize::try_from(config.max_export_batch_size).unwrap_or(usize::MAX),
        )
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(config.sampler, config.sampler_arg.0.unwrap_or(1.0)))
        .with_resource(resource(config.service_name.0.as_deref(), service))
        .build();
    Ok(Some(provider))
}

/// Sends the spans still queued and stops exporting; waits for the receiver at most `timeout`.
/// Blocks: call it off the runtime's worker threads.
pub fn shut_down(provider: &SdkTracerProvider, timeout: Duration) {
    if let Err(error) = provider.shutdown_with_timeout(timeout) {
        tracing::warn!(%error, "spans still queued at exit could not be exported");
    }
}

fn exporter(export: &TraceExport) -> Result<SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = SpanExporter::builder();
    match export.protocol {
        OtlpProtocol::HttpProtobuf => builder
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&export.endpoint)
            .with_timeout(export.timeout)
            .with_http_client(OnRuntime::new(export.timeout)?)
            .build(),
        OtlpProtocol::Grpc => {
            let builder = builder
                .with_tonic()
                .with_endpoint(&export.endpoint)
                .with_timeout(export.timeout);
            if export.endpoint.starts_with("https://") {
                builder
                    .with_tls_config(ClientTlsConfig::new().with_webpki_roots())
                    .build()
            } else {
                builder.build()
            }
        }
    }
}

fn protocol_name(protocol: OtlpProtocol) -> &'static str {
    match protocol {
        OtlpProtocol::HttpProtobuf => "http/protobuf",
        OtlpProtocol::Grpc => "grpc",
    }
}

fn sampler(choice: TraceSampler, ratio: f64) -> Sampler {
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    match choice {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Traceidratio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentbasedAlwaysOn => parent_based(Sampler::AlwaysOn),
        TraceSampler::ParentbasedAlwaysOff => parent_based(Sampler::AlwaysOff),
        TraceSampler::ParentbasedTraceidratio => parent_based(Sampler::TraceIdRatioBased(ratio)),
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK), then the service's name, version and instance.
fn resource(service_name: Option<&str>, service: &ServiceIdentity<'_>) -> Resource {
    let detected = Resource::builder().build();
    let detected_name = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .map(|name| name.to_string())
        .filter(|name| !name.starts_with("unknown_service"));
    let name = service_name
        .map(str::to_owned)
        .or(detected_name)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    Resource::builder()
        .with_service_name(name)
        .with_attributes([
            KeyValue::new("service.version", service.version.to_owned()),
            KeyValue::new("service.instance.id", service.instance.to_owned()),
        ])
        .build()
}

/// The caller's trace context from `traceparent` and `tracestate`; an empty context when there is
/// none or it is malformed (a new trace starts then).
pub fn caller_context(headers: &HeaderMap) -> Context {
    if !headers.contains_key("traceparent") {
        return Context::new();
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The trace id of the caller's `traceparent`, when it has a valid one: logged even when nothing
/// is exported, so a request can be followed from the proxy's log to ours.
pub fn caller_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    let context = caller_context(headers);
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.trace_id())
}

/// Hyper's client (connections kept open between exports, `https://` over rustls with the
/// compiled-in roots), with each export run on the async runtime: the SDK's batch thread has no
/// runtime of its own.
#[derive(Debug, Clone)]
struct OnRuntime {
    client: HyperClient<HttpsConnector<HttpConnector>>,
    runtime: tokio::runtime::Handle,
}

impl OnRuntime {
    fn new(timeout: Duration) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            opentelemetry_otlp::ExporterBuildError::InternalFailure(error.to_string())
        })?;
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            opentelemetry_otlp::ExporterBuildError::InternalFailure(error.to_string())
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: HyperClient::new(connector, timeout, None),
            runtime,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: axum::http::Request<Bytes>,
    ) -> Result<axum::http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await?
    }
}
