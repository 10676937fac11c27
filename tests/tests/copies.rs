//! One message, one count, against real nats-server and clickhouse-server: copies of the same
//! identities reach the stream further apart than JetStream's duplicate window, stamped with
//! other times (across second, minute, hour and day boundaries), some under another topic or
//! with another body, in random orders, and are taken by two workers, one of which dies between
//! writing a batch and acking it. Every statistic, at every bucket, must equal a count of each
//! identity once, at the time and under the topic of its first copy in the stream; `/raw` and
//! `/id` must list each identity once, as that copy; `message_copies` must hold the others; and
//! `rollup --check` must find nothing, before and after `rollup --rebuild`.
//!
//! The scenario is drawn from a seed (`STATSCACHE_TEST_SEED`, 22 by default, printed), so a
//! failure can be replayed. The many interleavings no real-server test reaches are the model
//! test's (`worker/tests/one_count_per_identity.rs`).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use statscache_tests::corpus::{publish_to_stream, restamped_corpus};
use statscache_tests::reference::{assert_history_lists_each_once, assert_served, every_bucket};
use statscache_tests::{
    free_port, run_command, wait_for, wait_for_consumer_drained, wait_until_ok, Servers, Service,
};

/// JetStream's duplicate window here: the shortest allowed, so that waves of copies can be
/// published a few seconds apart and all be stored.
const WINDOW: Duration = Duration::from_secs(2);

/// Waves of copies; an identity has at most one copy per wave.
const WAVES: usize = 3;

/// How a copy differs from the original: its time moves by one of these (seconds), crossing a
/// second, a minute, an hour or a day; its topic or body may change too.
const SHIFTS: [f64; 8] = [0.0, 0.45, -0.45, 61.0, 150.0, 3_600.0, -86_400.0, 86_400.0];

/// A small deterministic generator (xorshift64*), so the scenario follows from its seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// The copies to publish, wave by wave, and the copy of each identity that counts.
struct Scenario {
    waves: Vec<Vec<String>>,
    counted: Vec<String>,
    /// Distinct copies (a copy identical to the one that counts, byte for byte, *is* it).
    copies: BTreeSet<String>,
}

/// `original` as copy number `copy` of kind `draw` picks: re-stamped, re-topicked, edited.
fn variant(original: &Value, copy: usize, draw: &mut Draw) -> Value {
    let mut envelope = original.clone();
    let shift = SHIFTS[draw.below(SHIFTS.len() as u64) as usize];
    let timestamp = original["timestamp"].as_f64().expect("timestamp") + shift;
    envelope["timestamp"] = Value::from(timestamp);
    match draw.below(5) {
        0 => {
            let topic = original["topic"].as_str().expect("topic");
            let mut tokens: Vec<&str> = topic.split('.').collect();
            if tokens.len() > 3 {
                tokens[3] = "statscache";
            }
            envelope["topic"] = Value::from(tokens.join("."));
        }
        1 => envelope["msg"]["statscache_edit"] = Value::from(copy),
        _ => {}
    }
    envelope
}

fn scenario(seed: u64, originals: &[Value]) -> Scenario {
    let mut draw = Draw(seed.max(1));
    let mut waves = vec![Vec::new(); WAVES];
    let mut counted = Vec::new();
    let mut copies = BTreeSet::new();
    for original in originals {
        let first_wave = draw.below(WAVES as u64) as usize;
        let wanted = 1 + draw.below(WAVES as u64) as usize;
        let last_wave = (first_wave + wanted).min(WAVES);
        for (copy, wave) in (first_wave..last_wave).enumerate() {
            let envelope = variant(original, copy, &mut draw);
            let line = envelope.to_string();
            if wave == first_wave {
                counted.push(line.clone());
            }
            copies.insert(line.clone());
            waves[wave].push(line);
        }
    }
    for wave in &mut waves {
        // Random order within a wave: copies of different identities interleave.
        for index in (1..wave.len()).rev() {
            let other = draw.below(index as u64 + 1) as usize;
            wave.swap(index, other);
        }
    }
    Scenario {
        waves,
        counted,
        copies,
    }
}

/// `statscache-worker rollup <mode>` succeeds; returns what it printed.
async fn rollup(env: &[(String, String)], mode: &str) -> String {
    let output = run_command("worker", env, &["rollup", mode]).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rollup {mode}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_count_once_at_the_first_copys_time_whatever_workers_crash() {
    let seed: u64 = std::env::var("STATSCACHE_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(22);
    eprintln!("scenario seed {seed} (STATSCACHE_TEST_SEED replays it)");
    let originals: Vec<Value> = restamped_corpus(60)
        .iter()
        .map(|line| serde_json::from_str(line).expect("envelope"))
        .collect();
    let scenario = scenario(seed, &originals);

    let servers = Servers::start().await;
    let api_port = free_port();
    let env = servers.env(&[
        (
            "STATSCACHE_NATS__DUPLICATE_WINDOW",
            format!("{}s", WINDOW.as_secs()),
        ),
        ("STATSCACHE_API__LISTEN", format!("127.0.0.1:{api_port}")),
        ("STATSCACHE_WORKER__ACK_WAIT", "2s".to_string()),
    ]);
    let api = format!("http://127.0.0.1:{api_port}");
    let _api = Service::start("api", &env, &[]);
    // Two workers of small batches; the second dies after its second write, before the ack.
    let worker_env = |batch: usize, admin: u16| {
        let mut env = env.clone();
        env.push(("STATSCACHE_WORKER__BATCH_SIZE".into(), batch.to_string()));
        env.push((
            "STATSCACHE_WORKER__ADMIN_LISTEN".into(),
            format!("127.0.0.1:{admin}"),
        ));
        env
    };
    let (admin_a, admin_b) = (free_port(), free_port());
    let _worker_a = Service::start("worker", &worker_env(7, admin_a), &[]);
    let mut crashing = worker_env(5, admin_b);
    crashing.push((
        "FAULT_INJECTION_WORKER_ABORT_AFTER_WRITES".into(),
        "2".to_string(),
    ));
    let mut worker_b = Service::start("worker", &crashing, &[]);
    wait_until_ok(&format!("http://127.0.0.1:{admin_a}/health/readyz")).await;
    wait_until_ok(&format!("{api}/health/readyz")).await;

    for (index, wave) in scenario.waves.iter().enumerate() {
        if index > 0 {
            // JetStream forgets the previous wave's identities: every copy is stored.
            tokio::time::sleep(WINDOW + Duration::from_secs(1)).await;
        }
        publish_to_stream(&servers.nats.url, wave, true).await;
    }
    wait_for(
        "the crashing worker to die",
        Duration::from_secs(120),
        || {
            let exited = worker_b.has_exited();
            async move { exited.then_some(()) }
        },
    )
    .await;
    let _worker_b = Service::start("worker", &worker_env(5, admin_b), &[]);
    wait_for_consumer_drained(&servers.nats.url).await;

    assert_served(&api, &every_bucket(&scenario.counted)).await;
    assert_history_lists_each_once(&api, &scenario.counted).await;
    let kept_aside: u64 = servers
        .client()
        .query("SELECT uniqExact(msg_id, fingerprint) FROM message_copies")
        .fetch_one()
        .await
        .expect("message_copies");
    let others = scenario.copies.len() - scenario.counted.len();
    assert_eq!(kept_aside as usize, others, "copies kept aside");

    assert_eq!(rollup(&env, "--check").await, "");
    rollup(&env, "--rebuild").await;
    assert_served(&api, &every_bucket(&scenario.counted)).await;
    assert_eq!(rollup(&env, "--check").await, "");
}
