//! Traces: OpenTelemetry spans exported over OTLP/HTTP, configured by the standard
//! OTEL_* variables and off unless an OTLP endpoint is set.
//!
//! Spans meant for traces use the target [`TARGET`]; only those reach the exporter.
//! Code makes them only when a trace is being recorded: a new trace when [`sample`]
//! says so (OTEL_TRACES_SAMPLER's ratio, decided here, before any span exists), a
//! continued one when the incoming `traceparent` is sampled ([`sampled`]), and a child
//! when the current span belongs to a recorded trace ([`in_trace`]). Otherwise they
//! use `Span::none()`: a node not exporting traces, or a command not sampled, pays one
//! relaxed load (and, sampling, one random number) for them.
//!
//! The variables read (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   (a base URL; `/v1/traces` is appended): either turns tracing on;
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`:
//!   `http/protobuf` (the default) or `http/json`; `grpc` is refused at start-up;
//! - `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT` (and their `_TRACES_` forms);
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`;
//! - `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (e.g. `parentbased_traceidratio`
//!   and `0.01`);
//! - `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for traces (the exporter sees no other span).
pub const TARGET: &str = "otel_span";

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The share of new traces recorded, as f64 bits.
static RATIO: AtomicU64 = AtomicU64::new(0);
/// Whether a remote parent's sampled flag decides (the `parentbased_*` samplers).
static PARENT_BASED: AtomicBool = AtomicBool::new(true);

/// Whether spans are exported at all.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether to record a new trace (a root span): false when tracing is off, else by the
/// configured ratio.
#[inline]
pub fn sample() -> bool {
    if !enabled() {
        return false;
    }
    let ratio = f64::from_bits(RATIO.load(Ordering::Relaxed));
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}

/// Whether to continue a remote trace: by its sampled flag under the `parentbased_*`
/// samplers (the default), by the ratio otherwise; false for a malformed one.
pub fn sampled(traceparent: &str) -> bool {
    if !enabled() {
        return false;
    }
    let Some(flags) = traceparent.rsplit('-').next().and_then(|f| u8::from_str_radix(f, 16).ok()) else {
        return false;
    };
    if PARENT_BASED.load(Ordering::Relaxed) {
        flags & 1 == 1
    } else {
        sample()
    }
}

/// Whether the current span belongs to a recorded trace (its children should be
/// spans too).
#[inline]
pub fn in_trace() -> bool {
    enabled() && Span::current().metadata().is_some_and(|m| m.target() == TARGET)
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{var}={value:?}: use http/protobuf or http/json (OTLP over gRPC is not built in)")]
    Protocol { var: &'static str, value: String },
    #[error("OTEL_TRACES_SAMPLER={0:?}: use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio")]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?}: a ratio from 0 to 1")]
    SamplerArg(String),
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
}

/// The exporter's settings, read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub protocol: Protocol,
    /// The share of new traces recorded (OTEL_TRACES_SAMPLER and its argument).
    pub ratio: f64,
    /// Whether a remote parent's sampled flag decides.
    pub parent_based: bool,
}

impl TraceSettings {
    /// None when tracing is off (no endpoint, or turned off explicitly).
    pub fn from_env() -> Result<Option<TraceSettings>, TraceError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<TraceSettings>, TraceError> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if disabled || endpoint.is_none() {
            return Ok(None);
        }
        let chosen = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
            .into_iter()
            .find_map(|name| set(name).map(|value| (name, value)));
        let protocol = match chosen {
            None => Protocol::HttpBinary,
            Some((_, value)) if value == "http/protobuf" => Protocol::HttpBinary,
            Some((_, value)) if value == "http/json" => Protocol::HttpJson,
            Some((var, value)) => return Err(TraceError::Protocol { var, value }),
        };
        let ratio = || match set("OTEL_TRACES_SAMPLER_ARG") {
            None => Ok(1.0),
            Some(arg) => match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(TraceError::SamplerArg(arg)),
            },
        };
        let sampler = set("OTEL_TRACES_SAMPLER").unwrap_or_else(|| "parentbased_always_on".into());
        let (ratio, parent_based) = match sampler.as_str() {
            "always_on" => (1.0, false),
            "always_off" => (0.0, false),
            "traceidratio" => (ratio()?, false),
            "parentbased_always_on" => (1.0, true),
            "parentbased_always_off" => (0.0, true),
            "parentbased_traceidratio" => (ratio()?, true),
            _ => return Err(TraceError::Sampler(sampler)),
        };
        Ok(Some(TraceSettings { protocol, ratio, parent_based }))
    }
}

/// The exporting pipeline; dropping it flushes the spans still buffered.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("flushing traces at exit: {e}");
        }
    }
}

/// Builds the exporter and the tracing layer. Must run inside a tokio runtime: exports
/// are sent by a task on it. `service` names the service unless OTEL_SERVICE_NAME does;
/// `instance` (a node id) becomes `service.instance.id`.
pub(crate) fn pipeline<S>(
    settings: &TraceSettings,
    service: &'static str,
    instance: Option<&str>,
) -> Result<(Tracing, impl tracing_subscriber::Layer<S>), TraceError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let client = TokioHttpClient {
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?,
        runtime: tokio::runtime::Handle::try_current()
            .map_err(|_| TraceError::Exporter("not inside a tokio runtime".into()))?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(settings.protocol)
        .with_http_client(client)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    resource = resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if let Some(instance) = instance {
        resource = resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance.to_owned()));
    }
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK.
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false);
    RATIO.store(settings.ratio.to_bits(), Ordering::Relaxed);
    PARENT_BASED.store(settings.parent_based, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Tracing { provider }, layer))
}

/// Sends OTLP requests with reqwest on the service's runtime: the SDK's batch
/// processor runs on its own thread without a reactor, so the request is spawned onto
/// the runtime and its result awaited from there.
#[derive(Debug)]
struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let response =
                client.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body).send().await?;
            let mut out = http::Response::builder().status(response.status().as_u16());
            for (name, value) in response.headers() {
                out = out.header(name.as_str(), value.as_bytes());
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(out.body(body)?)
        };
        self.runtime.spawn(call).await?
    }
}

/// The W3C `traceparent` of `span`, to carry across a process boundary; None when
/// tracing is off or the span is not recorded.
pub fn traceparent(span: &Span) -> Option<String> {
    if !enabled() || span.is_none() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the remote span a `traceparent` names (ignored if malformed).
pub fn continue_from(span: &Span, traceparent: &str) {
    if !enabled() || span.is_none() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Links `span` to `other` (a long-lived span such as a connection, which is not made
/// the parent so that each command stays a small trace of its own), if `other` is
/// recorded.
pub fn link_to(span: &Span, other: &Span) {
    let recorded = |s: &Span| s.metadata().is_some_and(|m| m.target() == TARGET);
    if !enabled() || !recorded(span) || !recorded(other) {
        return;
    }
    let linked = other.context().span().span_context().clone();
    if linked.is_valid() {
        span.add_link(linked);
    }
}

/// Records the span's trace and span ids in its `trace_id` and `span_id` fields (which
/// the span must declare as `tracing::field::Empty`), so log lines written inside it
/// carry them. Call after [`continue_from`]: the ids are fixed from here on.
pub fn record_ids(span: &Span) {
    if !enabled() || span.is_none() {
        return;
    }
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, TraceError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TraceSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap().is_none());
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")];
        let default = TraceSettings { protocol: Protocol::HttpBinary, ratio: 1.0, parent_based: true };
        assert_eq!(settings(&on).unwrap(), Some(default));
        let disabled = [on[0], ("OTEL_SDK_DISABLED", "true")];
        assert!(settings(&disabled).unwrap().is_none());
        let none = [on[0], ("OTEL_TRACES_EXPORTER", "none")];
        assert!(settings(&none).unwrap().is_none());
    }

    #[test]
    fn protocols_are_http_only_and_the_traces_variable_wins() {
        let traces = [("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")];
        let json = [traces[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")];
        assert_eq!(settings(&json).unwrap().unwrap().protocol, Protocol::HttpJson);
        let grpc = [traces[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        let err = settings(&grpc).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("gRPC"), "{err}");
        let both = [grpc[0], grpc[1], ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")];
        assert_eq!(settings(&both).unwrap().unwrap().protocol, Protocol::HttpBinary);
    }

    #[test]
    fn the_sampler_is_read_from_the_standard_variables() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let read = |sampler: &str, arg: Option<&str>| {
            let mut vars = vec![on, ("OTEL_TRACES_SAMPLER", sampler)];
            vars.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
            settings(&vars).map(|s| s.map(|s| (s.ratio, s.parent_based)))
        };
        assert_eq!(read("parentbased_traceidratio", Some("0.01")).unwrap(), Some((0.01, true)));
        assert_eq!(read("traceidratio", None).unwrap(), Some((1.0, false)));
        assert_eq!(read("always_off", None).unwrap(), Some((0.0, false)));
        assert!(matches!(read("traceidratio", Some("2")), Err(TraceError::SamplerArg(_))));
        assert!(matches!(read("jaeger_remote", None), Err(TraceError::Sampler(_))));
    }
}
