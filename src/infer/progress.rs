//! Tagging progress on a terminal: articles done, sub-tokens per second, and a bar with its ETA
//! when the inputs could be counted ahead. Nothing is drawn when stderr is not a terminal: the
//! summary line at the end says what was done.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

pub struct TagProgress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl TagProgress {
    /// A bar of `total` articles (a counter when the total is unknown), on a terminal only.
    pub fn new(total: Option<usize>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| match total {
            Some(n) => ProgressBar::new(n as u64).with_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} articles  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("valid template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner} {pos} articles  {msg}  [{elapsed_precise}]",
                )
                .expect("valid template"),
            ),
        });
        if let Some(bar) = &bar {
            bar.tick();
        }
        TagProgress {
            bar,
            started: Instant::now(),
        }
    }

    /// `read` input items are done (tagged, failed or left to other shards); `tokens` sub-tokens
    /// tagged so far.
    pub fn advance(&self, read: usize, tokens: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(read as u64);
            let rate = tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} tokens/s"));
        }
    }

    /// Prints a line on stderr without breaking the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
