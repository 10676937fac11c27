//! What the benchmarks (`tests/benches/`) share: the rows the worker writes for a set of
//! envelopes, computed with its own plugins (for the bare inserts they are measured against),
//! and a process's peak memory.

use statscache_shared::message::Envelope;
use statscache_worker::identity::fingerprint;
use statscache_worker::plugin::Message;
use statscache_worker::rows::MessageRow;
use statscache_worker::sink::Batch;

/// The rows the worker writes for `lines`, computed with its own plugins.
pub fn worker_rows(lines: &[String]) -> Batch {
    let plugins =
        statscache_worker::plugins::load(&statscache_shared::config::Config::defaults().worker)
            .expect("plugins");
    let mut batch = Batch::default();
    for (sequence, line) in lines.iter().enumerate() {
        let envelope = Envelope::parse(line.as_bytes()).expect("envelope");
        let meta = statscache_worker::meta::extract(&envelope);
        let message = Message {
            identity: envelope.identity(),
            envelope,
            meta,
            stream_sequence: sequence as u64,
        };
        batch.push_message(
            MessageRow::new(
                &message,
                line.clone(),
                "bench".into(),
                message.envelope.event_time() as u32,
            ),
            fingerprint::of_copy(line.as_bytes()),
            fingerprint::of_content(&message.envelope.msg),
        );
        for plugin in &plugins {
            if !plugin.info().topics.matches(&message.envelope.topic) {
                continue;
            }
            let mut facts = Vec::new();
            plugin.process(&message, &mut facts).expect("process");
            batch.push_facts(&plugin.info().table, &message, &mut facts);
        }
    }
    batch
}

/// The peak resident memory of process `pid` so far, in MiB (0 once it exited).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmHWM:") {
            let kib: f64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0.0);
            return kib / 1024.0;
        }
    }
    0.0
}
