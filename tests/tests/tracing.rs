//! One trace per message: the ingestor's `publish` span and the worker's `store` span of a
//! message share a trace (the context crossed NATS in the `traceparent` header), and an API
//! request continues its caller's trace. Spans are read as an OTLP collector receives them.

use std::time::Duration;

use statscache_tests::otlp::{OtlpReceiver, ReceivedSpan};
use statscache_tests::{
    free_port, run_command, wait_for, wait_for_messages, wait_until_ok, Servers, Service,
};

const MSG_ID: &str = "2026-5d1e2a44-traced-message";

/// The first span of `service` named `name` whose attribute `key` is `value`.
fn find<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    name: &str,
    key: &str,
    value: &str,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|span| {
        span.service == service
            && span.name == name
            && span.attributes.get(key).map(String::as_str) == Some(value)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_message_is_one_trace_from_publish_to_store() {
    let servers = Servers::start().await;
    let receiver = OtlpReceiver::start().await;
    let api_port = free_port();
    let worker_admin = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_TELEMETRY__OTLP_ENDPOINT",
            receiver.endpoint.clone(),
        ),
        ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")),
        (
            "STATSCACHE_WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{worker_admin}"),
        ),
    ]);
    let _worker = Service::start("worker", &env, &[]);
    let _api = Service::start("api", &env, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{worker_admin}/health/readyz")).await;
    wait_until_ok(&format!("http://127.0.0.1:{api_port}/health/readyz")).await;

    // Through the real relay (`publish` runs it), which starts the message's trace.
    let envelope = serde_json::json!({
        "topic": "org.fedoraproject.prod.buildsys.tag",
        "msg": {"tag": "f44", "owner": "alice"},
        "msg_id": MSG_ID,
        "timestamp": 1_780_000_000.5,
        "i": 1,
    });
    let file = tempfile::NamedTempFile::new().expect("envelope file");
    std::fs::write(file.path(), format!("{envelope}\n")).expect("write envelope");
    let path = file.path().to_str().expect("utf-8 path");
    let output = run_command("ingestor", &env, &["publish", "--file", path]).await;
    assert!(output.status.success(), "publish: {output:?}");
    wait_for_messages(&servers.client(), 1).await;

    let (publish, store) = wait_for(
        "the message's publish and store spans",
        Duration::from_secs(60),
        || async {
            let spans = receiver.spans();
            let id = "messaging.message.id";
            let publish = find(&spans, "statscache-ingestor", "publish", id, MSG_ID)?.clone();
            let store = find(&spans, "statscache-worker", "store", id, MSG_ID)?.clone();
            Some((publish, store))
        },
    )
    .await;
    assert_eq!(store.trace_id, publish.trace_id, "{publish:?}\n{store:?}");
    assert_eq!(store.parent_span_id, publish.span_id);
    assert!(
        publish.parent_span_id.is_empty(),
        "publish starts the trace"
    );
    let sequence = "messaging.nats.stream_sequence";
    assert_eq!(
        publish.attributes.get(sequence).map(String::as_str),
        Some("1")
    );
    assert_eq!(
        store.attributes.get(sequence).map(String::as_str),
        Some("1")
    );

    // The batch's shared work is its own span, which the message's store span links to.
    let (batch_trace, batch_span) = store.links.first().cloned().expect("a link to the batch");
    wait_for("the batch span", Duration::from_secs(60), || {
        let spans = receiver.spans();
        let found = spans.iter().any(|span| {
            span.name == "store_batch" && span.trace_id == batch_trace && span.span_id == batch_span
        });
        async move { found.then_some(()) }
    })
    .await;

    // An API request continues the caller's trace.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api_port}/api/volume?bucket=all"))
        .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
        .send()
        .await
        .expect("api request");
    assert!(response.status().is_success(), "{response:?}");
    let request = wait_for("the API request span", Duration::from_secs(60), || {
        let spans = receiver.spans();
        let found = find(
            &spans,
            "statscache-api",
            "request",
            "http.route",
            "/api/:plugin",
        )
        .filter(|span| span.trace_id == caller_trace)
        .cloned();
        async move { found }
    })
    .await;
    assert_eq!(request.parent_span_id, caller_span);
    assert_eq!(
        request
            .attributes
            .get("http.response.status_code")
            .map(String::as_str),
        Some("200")
    );
}
