//! `statscache-worker generate`: synthetic Fedora-shaped history for benchmarks, written straight
//! into the documented tables, so that anyone can rebuild the scale figures of the README.
//!
//! Why not through JetStream: 50 M messages through the real pipeline take hours on a small
//! machine, and the question a scale benchmark asks is what *reading* costs. The rows are still
//! made by the worker's own code: every message goes through the configured plugins and
//! [`sink::Batch`] (so `messages`, the history lookup tables and every `stat_<plugin>` table get
//! exactly the rows a worker would write), only the stream is skipped. The rollups of the
//! generated months are then rebuilt from those facts, as `statscache-worker rollup --rebuild`
//! does.
//!
//! Shape (deterministic for a seed): envelopes are the corpus's (`tests/fixtures/`), with a new
//! `msg_id`, timestamp and topic; [`TOPICS`] topics (the corpus's, then variants of them with an
//! extra token, same category) drawn Zipf-like, so a few topics carry most of the traffic as on
//! Fedora's bus; each message names as many people and packages as its template did, drawn
//! Zipf-like from `user<rank>` and `package<rank>` pools (so `user42` is a moderately busy
//! person); times are spread evenly over the requested days with jitter (70 000 a day by
//! default, about Fedora's rate). Envelopes over [`MAX_TEMPLATE_BYTES`] are left out to keep the
//! bodies small on disk. Bodies do not name the drawn people (only the stored `usernames` and
//! `packages` do).

use std::collections::BTreeMap;
use std::path::Path;

use statscache_shared::config::Config;
use statscache_shared::message::Envelope;

use crate::identity::fingerprint;
use crate::meta::{self, Meta};
use crate::plugin::{Fact, Message, Plugin};
use crate::rows::MessageRow;
use crate::sink::{self, Batch};
use crate::WorkerError;

type WriteTask = tokio::task::JoinHandle<Result<(), clickhouse::error::Error>>;

/// Distinct topics drawn from.
pub const TOPICS: usize = 1_000;
/// Distinct people and packages drawn from.
pub const USERS: usize = 20_000;
pub const PACKAGES: usize = 20_000;
/// Messages a day when `--days` is not given (about Fedora's bus).
pub const MESSAGES_PER_DAY: u64 = 70_000;
/// Corpus envelopes larger than this are not used as templates.
pub const MAX_TEMPLATE_BYTES: usize = 2_048;
/// Messages per INSERT batch.
const BATCH_MESSAGES: u64 = 50_000;
/// Zipf exponents: topics are more concentrated than people and packages.
const TOPIC_EXPONENT: f64 = 1.1;
const NAME_EXPONENT: f64 = 1.0;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub messages: u64,
    /// The history's span; messages end at `end`.
    pub days: f64,
    /// Epoch seconds of the newest message.
    pub end: f64,
    pub seed: u64,
}

/// splitmix64: small, fast and deterministic for a seed; statistical quality is ample here.
struct Random(u64);

impl Random {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Ranks 0..n with weight 1 / (rank + 1)^exponent.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut cumulative = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(exponent);
            cumulative.push(total);
        }
        for weight in &mut cumulative {
            *weight /= total;
        }
        Zipf { cumulative }
    }

    fn sample(&self, random: &mut Random) -> usize {
        let u = random.unit();
        self.cumulative
            .partition_point(|&weight| weight < u)
            .min(self.cumulative.len() - 1)
    }
}

/// A topic to draw and the corpus envelopes that carry it.
struct Topic {
    name: String,
    templates: Vec<Template>,
}

#[derive(Clone)]
struct Template {
    envelope: Envelope,
    /// How many people and packages the real message named.
    users: usize,
    packages: usize,
}

/// The corpus's topics by frequency, then variants of them up to [`TOPICS`].
fn topics(corpus: &str) -> Vec<Topic> {
    let mut by_topic: BTreeMap<String, Vec<Template>> = BTreeMap::new();
    for line in corpus.lines() {
        if line.len() > MAX_TEMPLATE_BYTES {
            continue;
        }
        let Ok(envelope) = Envelope::parse(line.as_bytes()) else {
            continue;
        };
        let Meta {
            usernames,
            packages,
        } = meta::extract(&envelope);
        by_topic
            .entry(envelope.topic.clone())
            .or_default()
            .push(Template {
                envelope,
                users: usernames.len(),
                packages: packages.len(),
            });
    }
    let mut real: Vec<(String, Vec<Template>)> = by_topic.into_iter().collect();
    real.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    let mut topics = Vec::with_capacity(TOPICS);
    for (name, templates) in &real {
        topics.push(Topic {
            name: name.clone(),
            templates: templates.clone(),
        });
    }
    let mut variant = 1;
    while !real.is_empty() && topics.len() < TOPICS {
        for (name, templates) in &real {
            if topics.len() == TOPICS {
                break;
            }
            topics.push(Topic {
                name: format!("{name}.v{variant}"),
                templates: templates.clone(),
            });
        }
        variant += 1;
    }
    topics
}

/// Draws the messages of a history; `next` gives them oldest first.
struct Generator {
    topics: Vec<Topic>,
    topic_ranks: Zipf,
    name_ranks: Zipf,
    random: Random,
    request: GenerateRequest,
}

impl Generator {
    fn new(corpus: &str, request: GenerateRequest) -> Generator {
        Generator {
            topics: topics(corpus),
            topic_ranks: Zipf::new(TOPICS, TOPIC_EXPONENT),
            name_ranks: Zipf::new(USERS.max(PACKAGES), NAME_EXPONENT),
            random: Random(request.seed),
            request,
        }
    }

    fn names(&mut self, prefix: &str, count: usize, pool: usize) -> Vec<String> {
        let mut names = Vec::with_capacity(count);
        for _ in 0..count {
            let rank = self.name_ranks.sample(&mut self.random) % pool;
            let name = format!("{prefix}{rank}");
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The `index`-th message (of `request.messages`), as a plugin sees it.
    fn message(&mut self, index: u64) -> Message {
        let span = self.request.days * 86_400.0;
        let slot = span / self.request.messages as f64;
        let offset = (index as f64 + self.random.unit()) * slot;
        let timestamp = ((self.request.end - span + offset) * 1e6).round() / 1e6;
        let rank = self.topic_ranks.sample(&mut self.random) % self.topics.len();
        let topic = &self.topics[rank];
        let choice = self.random.next_u64() as usize % topic.templates.len();
        let template = &topic.templates[choice];
        let mut envelope = template.envelope.clone();
        envelope.topic = topic.name.clone();
        envelope.timestamp = Some(timestamp);
        let (users, packages) = (template.users, template.packages);
        let year = chrono::DateTime::from_timestamp(timestamp as i64, 0)
            .map(|time| time.format("%Y").to_string())
            .unwrap_or_default();
        let a = self.random.next_u64();
        let b = self.random.next_u64();
        let identity = format!(
            "{year}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        );
        envelope.msg_id = Some(identity.clone());
        let meta = Meta {
            usernames: self.names("user", users, USERS),
            packages: self.names("package", packages, PACKAGES),
        };
        Message {
            envelope,
            identity,
            meta,
            stream_sequence: index + 1,
        }
    }
}

/// The rows a worker would write for `message`: its history rows and every plugin's facts.
fn add_message(batch: &mut Batch, plugins: &[Box<dyn Plugin>], message: &Message, now: f64) {
    let body = serde_json::to_string(&message.envelope).unwrap_or_default();
    let timestamp = message.envelope.event_time();
    let copy_fingerprint = fingerprint::of_copy(body.as_bytes());
    batch.push_message(
        MessageRow::new(message, body, "generate".to_string(), timestamp as u32),
        copy_fingerprint,
        fingerprint::of_content(&message.envelope.msg),
    );
    let mut facts: Vec<Fact> = Vec::new();
    for plugin in plugins {
        let info = plugin.info();
        if !info.takes(&message.envelope.topic, timestamp, now) {
            continue;
        }
        facts.clear();
        if let Err(error) = plugin.process(message, &mut facts) {
            tracing::debug!(plugin = %info.identifier, %error, "a generated message fails a plugin");
            continue;
        }
        batch.push_facts(&info.table, message, &mut facts);
    }
}

/// Generates `request.messages` messages from the envelopes in `templates` (JSON lines) into
/// the configured database, one batch written while the next is made. Returns the count.
pub async fn generate(
    config: &Config,
    templates: &Path,
    request: GenerateRequest,
) -> Result<u64, WorkerError> {
    let corpus = std::fs::read_to_string(templates).map_err(|error| {
        WorkerError::Generate(format!("cannot read {}: {error}", templates.display()))
    })?;
    let plugins = crate::plugins::load(&config.worker)?;
    let clickhouse = crate::service::prepare_clickhouse(config, &plugins).await?;
    let mut generator = Generator::new(&corpus, request.clone());
    if generator.topics.is_empty() {
        return Err(WorkerError::Generate(format!(
            "no usable template envelope in {}",
            templates.display()
        )));
    }
    let now = chrono::Utc::now().timestamp() as f64;
    let mut in_flight: Option<WriteTask> = None;
    let mut index = 0;
    while index < request.messages {
        let batch_start = index;
        let mut batch = Batch::default();
        let end = (index + BATCH_MESSAGES).min(request.messages);
        while index < end {
            let message = generator.message(index);
            add_message(&mut batch, &plugins, &message, now);
            index += 1;
        }
        if let Some(previous) = in_flight.take() {
            finish(previous).await?;
            tracing::info!(
                written = batch_start,
                total = request.messages,
                "generating"
            );
        }
        let client = clickhouse.clone();
        in_flight = Some(tokio::spawn(
            async move { sink::write(&client, &batch).await },
        ));
    }
    if let Some(last) = in_flight {
        finish(last).await?;
    }
    tracing::info!(
        written = request.messages,
        "generated; building the rollups"
    );
    // Rollups are derived from the facts just written (months from the oldest message on).
    let infos: Vec<&crate::plugin::PluginInfo> = plugins.iter().map(|p| p.info()).collect();
    let oldest = (request.end - request.days * 86_400.0).max(0.0) as u64;
    crate::tables::rebuild_rollups(&clickhouse, &infos, oldest).await?;
    Ok(request.messages)
}

async fn finish(write: WriteTask) -> Result<(), WorkerError> {
    match write.await {
        Ok(result) => result.map_err(WorkerError::Write),
        Err(error) => Err(WorkerError::Generate(format!(
            "a write task failed: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks_and_stays_in_range() {
        let zipf = Zipf::new(1_000, TOPIC_EXPONENT);
        let mut random = Random(7);
        let mut counts = vec![0u32; 1_000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut random)] += 1;
        }
        assert!(counts[0] > counts[9] && counts[9] > counts[99]);
        assert!(counts[999] < counts[0] / 100);
    }

    #[test]
    fn the_corpus_gives_a_thousand_topics_and_messages_in_time_order() {
        let corpus = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/fedmsg-real.jsonl"
        ))
        .expect("corpus");
        let request = GenerateRequest {
            messages: 1_000,
            days: 1.0,
            end: 1_700_000_000.0,
            seed: 1,
        };
        let mut generator = Generator::new(&corpus, request);
        assert_eq!(generator.topics.len(), TOPICS);
        let mut previous = 0.0;
        for index in 0..1_000 {
            let message = generator.message(index);
            let timestamp = message.envelope.event_time();
            assert!(timestamp >= previous);
            assert!((1_699_913_600.0..=1_700_000_000.0).contains(&timestamp));
            assert_eq!(message.envelope.msg_id.as_deref(), Some(&*message.identity));
            previous = timestamp;
        }
    }
}
