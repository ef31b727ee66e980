//! Traces across nodes: two real node processes export OTLP/HTTP to a receiver inside
//! the test, and one cross-node signal shows as one trace: the client's span -> node
//! A's command -> its publish (with the Redis call under it) -> node B's delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::helpers::{wait_until, Client, NodeProcess, TestRedis};

/// One exported span, with what this test looks at.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// `service.instance.id` of the exporting process (the node id).
    instance: String,
    service: String,
    attributes: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(n)) => n.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// An OTLP/HTTP receiver (POST /v1/traces, protobuf) collecting every span it gets.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Exported>>>) {
    let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                let mut out = store.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let resource = resource_spans.resource.unwrap_or_default();
                    let attr = |key: &str| {
                        resource.attributes.iter().find(|a| a.key == key).map(|a| text(&a.value)).unwrap_or_default()
                    };
                    let (instance, service) = (attr("service.instance.id"), attr("service.name"));
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            out.push(Exported {
                                name: span.name,
                                trace_id: hex(&span.trace_id),
                                span_id: hex(&span.span_id),
                                parent_span_id: hex(&span.parent_span_id),
                                instance: instance.clone(),
                                service: service.clone(),
                                attributes: span.attributes.iter().map(|a| (a.key.clone(), text(&a.value))).collect(),
                            });
                        }
                    }
                }
                // An empty ExportTraceServiceResponse.
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cross_node_signal_is_one_trace_from_the_client_through_both_nodes() {
    let (otlp, spans) = receiver().await;
    let redis = TestRedis::start().await;
    let endpoint = format!("http://{otlp}");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
    ];
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("n1.log");
    let n1_env = [&otel[..], &[("LOG_FORMAT", "json"), ("RUST_LOG", "warn,signal=debug")]].concat();
    let n1 = NodeProcess::start_with_log(&redis.url(), "n1", &n1_env, Some(&log)).await;
    let n2 = NodeProcess::start(&redis.url(), "n2", &otel).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n2.addr).await;
    a.join_pair(&mut b, "traced").await;

    // The client continues its own trace into the node.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    a.send(json!({
        "type": "signal", "room": "traced", "to": b.peer(), "kind": "offer", "data": {"sdp": "v=0"},
        "traceparent": format!("00-{client_trace}-{client_span}-01"),
    }))
    .await;
    assert_eq!(b.recv_signal().await.data.get(), r#"{"sdp":"v=0"}"#);

    let find = |name: &str, instance: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.name == name && s.instance == instance && s.trace_id == client_trace)
            .cloned()
    };
    wait_until(Duration::from_secs(20), "the signal's spans from both nodes", || async {
        find("signal", "n1").is_some()
            && find("publish", "n1").is_some()
            && find("publish_node", "n1").is_some()
            && find("deliver", "n2").is_some()
    })
    .await;
    let command = find("signal", "n1").unwrap();
    let publish = find("publish", "n1").unwrap();
    let redis_call = find("publish_node", "n1").unwrap();
    let deliver = find("deliver", "n2").unwrap();

    // One trace, and each span's parent is the one before it.
    assert_eq!(command.parent_span_id, client_span, "the command continues the client's span");
    assert_eq!(publish.parent_span_id, command.span_id);
    assert_eq!(redis_call.parent_span_id, publish.span_id, "the Redis call is under the publish");
    assert_eq!(deliver.parent_span_id, publish.span_id, "node B's delivery is a child of node A's publish");
    assert_eq!(redis_call.attributes.get("db.system").map(String::as_str), Some("redis"));
    assert_eq!(command.attributes.get("room").map(String::as_str), Some("traced"));
    assert!(command.service == "signal" && deliver.service == "signal", "{command:?} {deliver:?}");

    // A signal without a client trace starts its own, which still spans both nodes.
    a.signal("traced", b.peer(), "answer", json!({"n": 2})).await;
    b.recv_signal().await;
    wait_until(Duration::from_secs(20), "a node-started trace reaching node B", || async {
        let spans = spans.lock().unwrap();
        spans.iter().any(|command| {
            command.name == "signal"
                && command.parent_span_id.is_empty()
                && command.trace_id != client_trace
                && spans.iter().any(|d| d.name == "deliver" && d.instance == "n2" && d.trace_id == command.trace_id)
        })
    })
    .await;

    // Log lines written inside a traced command carry its trace id: a refused signal
    // (to a peer not in the room) is logged at debug level under the command's span.
    let refused_trace = "0af7651916cd43dd8448eb211c80319c";
    a.send(json!({
        "type": "signal", "room": "elsewhere", "to": b.peer(), "kind": "offer", "data": {},
        "traceparent": format!("00-{refused_trace}-b7ad6b7169203331-01"),
    }))
    .await;
    a.recv_error("not-in-room").await;
    wait_until(Duration::from_secs(10), "the refusal logged with its trace id", || async {
        std::fs::read_to_string(&log).unwrap_or_default().lines().any(|line| {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else { return false };
            entry["message"] == "command refused" && entry["span"]["trace_id"] == refused_trace
        })
    })
    .await;
    drop((n1, n2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ratio_of_zero_only_sampled_client_traces_are_recorded() {
    let (otlp, spans) = receiver().await;
    let redis = TestRedis::start().await;
    let endpoint = format!("http://{otlp}");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ];
    let n1 = NodeProcess::start(&redis.url(), "n1", &otel).await;
    let n2 = NodeProcess::start(&redis.url(), "n2", &otel).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n2.addr).await;
    a.join_pair(&mut b, "sampled").await;

    // Not sampled: no client trace, and a client trace whose sampled flag is off.
    a.signal("sampled", b.peer(), "offer", json!({"n": 1})).await;
    a.send(json!({
        "type": "signal", "room": "sampled", "to": b.peer(), "kind": "offer", "data": {"n": 2},
        "traceparent": "00-11111111111111111111111111111111-2222222222222222-00",
    }))
    .await;
    // Sampled by the client: recorded on both nodes whatever the ratio.
    let sampled_trace = "33333333333333333333333333333333";
    a.send(json!({
        "type": "signal", "room": "sampled", "to": b.peer(), "kind": "offer", "data": {"n": 3},
        "traceparent": format!("00-{sampled_trace}-4444444444444444-01"),
    }))
    .await;
    for _ in 0..3 {
        b.recv_signal().await;
    }
    wait_until(Duration::from_secs(20), "the sampled signal's spans", || async {
        let spans = spans.lock().unwrap();
        ["signal", "deliver"].iter().all(|name| spans.iter().any(|s| s.name == *name && s.trace_id == sampled_trace))
    })
    .await;
    // Spans are exported in the order they end: anything from the first two signals
    // would have arrived by now.
    let spans = spans.lock().unwrap().clone();
    assert!(spans.iter().all(|s| s.trace_id == sampled_trace), "only the sampled trace: {spans:#?}");
    drop((n1, n2));
}
