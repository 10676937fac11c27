//! Progress of the long operator commands (`ingestor backfill`, `worker replay`,
//! `worker rollup --rebuild` and `--check`), drawn one way for all of them: a bar with the rate
//! and the time left when a person watches a terminal, a log line per update otherwise (a
//! journal or a CI log has no use for a bar redrawn in place).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    what: &'static str,
    unit: &'static str,
    bar: Option<ProgressBar>,
    done: u64,
    total: u64,
}

impl Progress {
    /// Progress of `what` (e.g. "replaying") over `total` `unit`s (e.g. "messages").
    pub fn new(what: &'static str, unit: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) = style(unit) {
                bar.set_style(style);
            }
            bar.set_message(what);
            bar
        });
        Progress {
            what,
            unit,
            bar,
            done: 0,
            total,
        }
    }

    /// One more unit done; `detail` says which.
    pub fn step(&mut self, detail: &str) {
        self.advance_to(self.done + 1, detail);
    }

    /// `done` units done so far; `detail` says what else is worth knowing.
    pub fn advance_to(&mut self, done: u64, detail: &str) {
        self.done = done;
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{} {detail}", self.what));
                bar.set_position(done);
            }
            None => tracing::info!(
                what = self.what,
                done = self.done,
                total = self.total,
                unit = self.unit,
                detail,
                "progress"
            ),
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_with_message(self.what);
        }
    }
}

/// The bar: what, how far, the rate and the time left.
fn style(unit: &str) -> Result<ProgressStyle, indicatif::style::TemplateError> {
    let template =
        format!("{{msg:30}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    Ok(ProgressStyle::with_template(&template)?.progress_chars("=> "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_template_is_valid() {
        assert!(style("windows").is_ok());
    }

    #[test]
    fn steps_and_jumps_both_count() {
        let mut progress = Progress::new("replaying", "messages", 10);
        progress.advance_to(4, "sequence 4");
        progress.step("sequence 5");
        assert_eq!(progress.done, 5);
        progress.finish();
    }
}
