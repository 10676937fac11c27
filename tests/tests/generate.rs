//! `statscache-worker generate` writes a history the api serves exactly: its statistics, `/raw`
//! and `/id` agree with direct counts over the tables it wrote, its rollups with its facts, and
//! the history lookup tables with `messages`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use statscache_tests::corpus::served_counts;
use statscache_tests::{
    fixture, free_port, get_json, history_lookup_differences, run_command, wait_until_ok, Servers,
    Service,
};

const MESSAGES: u64 = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn generated_history_is_served_as_stored() {
    let servers = Servers::start().await;
    let api_port = free_port();
    let env = servers.env(&[("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}"))]);
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 60;
    let templates = fixture("fedmsg-real.jsonl").display().to_string();
    let messages = MESSAGES.to_string();
    let end_text = end.to_string();
    let output = run_command(
        "worker",
        &env,
        &[
            "generate",
            "--messages",
            &messages,
            "--days",
            "2",
            "--end",
            &end_text,
            "--templates",
            &templates,
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "generate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The rollups were rebuilt from the generated facts.
    let check = run_command("worker", &env, &["rollup", "--check"]).await;
    assert!(
        check.status.success(),
        "rollup --check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _api = Service::start("api", &env, &[]);
    let api = format!("http://127.0.0.1:{api_port}");
    wait_until_ok(&format!("{api}/health/readyz")).await;
    let client = servers.client();

    let stored: u64 = client
        .query("SELECT uniqExact(msg_id) FROM messages")
        .fetch_one()
        .await
        .expect("count messages");
    assert_eq!(stored, MESSAGES);
    let topics: u64 = client
        .query("SELECT uniqExact(topic) FROM messages")
        .fetch_one()
        .await
        .expect("count topics");
    assert!(topics > 300, "only {topics} topics");
    assert_eq!(
        history_lookup_differences(&client)
            .await
            .expect("lookup check"),
        Vec::<String>::new()
    );

    let volume = served_counts(&api, "volume").await.expect("volume");
    assert_eq!(volume.values().sum::<u64>(), MESSAGES);
    let by_user = served_counts(&api, "volume-by-user")
        .await
        .expect("volume-by-user");
    let rows: Vec<(String, u64)> = client
        .query("SELECT name, uniqExact(msg_id) FROM message_users GROUP BY name")
        .fetch_all()
        .await
        .expect("users");
    let direct: BTreeMap<String, u64> = rows.into_iter().collect();
    assert_eq!(by_user, direct);
    assert!(
        by_user.get("user0") > by_user.get("user42"),
        "people are skewed"
    );

    // `/raw` over the last day for one person, against the same question asked of `messages`.
    let start = end - 86_400;
    let raw = get_json(&format!(
        "{api}/raw?start={start}&end={end}&user=user3&rows_per_page=100"
    ))
    .await
    .expect("/raw");
    let expected: u64 = client
        .query(
            "SELECT uniqExact(msg_id) FROM messages
             WHERE timestamp >= ? AND timestamp <= ? AND has(usernames, 'user3')",
        )
        .bind(start as f64)
        .bind(end as f64)
        .fetch_one()
        .await
        .expect("direct /raw count");
    assert!(expected > 0);
    assert_eq!(raw["total"].as_u64(), Some(expected));
    let page = raw["raw_messages"].as_array().expect("raw_messages");
    assert_eq!(page.len() as u64, expected.min(100));

    let msg_id: String = client
        .query("SELECT msg_id FROM messages ORDER BY time LIMIT 1 OFFSET 5000")
        .fetch_one()
        .await
        .expect("a msg_id");
    let found = get_json(&format!("{api}/id?id={msg_id}"))
        .await
        .expect("/id");
    assert_eq!(found["msg_id"].as_str(), Some(msg_id.as_str()));
}
