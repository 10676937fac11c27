//! The port against the real fedmsg.meta 0.31.0's answers for the corpus
//! (`tests/fixtures/fedmsg-real-meta-text-expected.jsonl`), service by service.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

fn fixture(name: &str) -> Vec<String> {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(str::to_string).collect()
}

/// Our fields in the JSON shape of datagrepper's `meta`.
fn as_json(text: &Text) -> BTreeMap<&'static str, Value> {
    BTreeMap::from([
        ("title", Value::from(text.title.clone())),
        ("subtitle", Value::from(text.subtitle.clone())),
        ("link", Value::from(text.link.clone())),
        ("icon", Value::from(text.icon.clone())),
        ("secondary_icon", Value::from(text.secondary_icon.clone())),
        ("objects", Value::from(text.objects.clone())),
    ])
}

#[test]
fn every_ported_service_matches_fedmsg_meta_on_the_corpus() {
    let messages = fixture("fedmsg-real.jsonl");
    let expectations = fixture("fedmsg-real-meta-text-expected.jsonl");
    assert_eq!(messages.len(), expectations.len());
    let mut described: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (line, (raw, expected)) in messages.iter().zip(&expectations).enumerate() {
        let envelope = Envelope::parse(raw.as_bytes()).expect("fixture envelopes are valid");
        let expected: Value = serde_json::from_str(expected).expect("expectation JSON");
        let Some(text) = describe(&envelope) else {
            continue;
        };
        *described
            .entry(envelope.category().to_string())
            .or_default() += 1;
        for (field, ours) in as_json(&text) {
            if expected[field] != ours {
                mismatches.push(format!(
                    "line {} {}: {field}\n  fedmsg.meta {}\n  ours        {ours}",
                    line + 1,
                    envelope.topic,
                    expected[field]
                ));
            }
        }
    }
    println!("described per service: {described:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn unported_services_and_unknown_topics_are_not_described() {
    for topic in [
        "org.fedoraproject.prod.zanata.document.upload",
        "org.example.prod.compose.rawhide.start",
        "org.fedoraproject.prod.composer.start",
    ] {
        let envelope =
            Envelope::from_value(serde_json::json!({"topic": topic, "msg": {}, "timestamp": 1.0}))
                .expect("valid envelope");
        assert_eq!(describe(&envelope), None, "{topic}");
    }
}

#[test]
fn missing_fields_fall_back_like_fedmsg_meta() {
    let envelope = Envelope::from_value(serde_json::json!({
        "topic": "org.fedoraproject.prod.compose.rawhide.start",
        "msg": "not an object",
        "timestamp": 1.0,
    }))
    .expect("valid envelope");
    let text = describe(&envelope).expect("compose is ported");
    assert_eq!(text.title, "compose.rawhide.start");
    assert_eq!(
        text.subtitle.as_deref(),
        Some("Started Fedora Rawhide compose")
    );
    assert_eq!(text.objects, ["rawhide/primary"]);
}

#[test]
fn avatars_are_libravatars_of_the_fedora_openid() {
    assert_eq!(
        avatar::of_user("limburgher"),
        "https://seccdn.libravatar.org/avatar/67fc36d5974ea45ec922a650dc117d83acf0a1f646cd17ba80e9e0fe6e2ed164?s=64&d=retro"
    );
    assert_eq!(
        avatar::of_user("bodhi"),
        "https://apps.fedoraproject.org/img/icons/bodhi-64.png"
    );
}
