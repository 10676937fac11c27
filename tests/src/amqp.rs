//! The real fedora-messaging publisher (`tests/support/amqp_publish.py`), for the AMQP tests.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{ensure_installed, repo_root};

/// One message the publisher sent, as it reported it.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishedAmqp {
    pub id: String,
    pub topic: String,
    /// The `sent-at` header, ISO 8601.
    pub sent_at: String,
    pub usernames: Vec<String>,
    pub packages: Vec<String>,
}

/// Runs `amqp_publish.py URL OPTIONS... FILES...` (see the script for the options) to the end
/// and returns what it published.
pub async fn publish_amqp(url: &str, options: &[&str], files: &[PathBuf]) -> Vec<PublishedAmqp> {
    ensure_installed();
    let output = tokio::process::Command::new("python3")
        .arg(repo_root().join("tests/support/amqp_publish.py"))
        .arg(url)
        .args(options)
        .args(files)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run amqp_publish.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "amqp_publish.py failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut published = Vec::new();
    for line in stdout.lines() {
        let message: PublishedAmqp = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("amqp_publish.py printed {line:?}: {error}"));
        published.push(message);
    }
    published
}
