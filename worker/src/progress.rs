//! Progress of the long operator commands (`rollup --rebuild`, `rollup --check`): a bar when a
//! person watches a terminal, a log line per step otherwise (a journal has no use for a bar
//! redrawn in place).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    done: u64,
    total: u64,
}

impl Progress {
    /// Progress over `total` steps of `what`.
    pub fn new(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg:30} [{bar:40}] {pos}/{len} months, eta {eta}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            what,
            bar,
            done: 0,
            total,
        }
    }

    /// One step done; `detail` says which.
    pub fn step(&mut self, detail: &str) {
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{} {detail}", self.what));
                bar.inc(1);
            }
            None => tracing::info!(
                what = self.what,
                done = self.done,
                total = self.total,
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
