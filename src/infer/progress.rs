//! Progress on a terminal: [`TerminalBar`], an indicatif bar drawn only when stderr is a
//! terminal (training uses it too), and [`TagProgress`]: articles done, sub-tokens per second, and
//! a bar with its ETA when the inputs could be counted ahead. When stderr is a file or a pipe no
//! bar is drawn: the summary line at the end says what was done.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

/// A bar on a terminal, or nothing; lines printed through it do not break it.
pub struct TerminalBar {
    bar: Option<ProgressBar>,
}

impl TerminalBar {
    /// Makes the bar with `make` when stderr is a terminal.
    pub fn new(make: impl FnOnce() -> ProgressBar) -> Self {
        let bar = std::io::stderr().is_terminal().then(make);
        if let Some(bar) = &bar {
            bar.tick();
        }
        TerminalBar { bar }
    }

    pub fn bar(&self) -> Option<&ProgressBar> {
        self.bar.as_ref()
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

/// Tagging's bar.
pub struct TagProgress {
    bar: TerminalBar,
    started: Instant,
}

impl TagProgress {
    /// A bar of `total` input items (a counter when the total is unknown), on a terminal only.
    pub fn new(total: Option<usize>) -> Self {
        let bar = TerminalBar::new(|| match total {
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
        TagProgress {
            bar,
            started: Instant::now(),
        }
    }

    /// `read` input items are done (tagged, failed or left to other shards); `tokens` sub-tokens
    /// tagged so far.
    pub fn advance(&self, read: usize, tokens: usize) {
        if let Some(bar) = self.bar.bar() {
            bar.set_position(read as u64);
            let rate = tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{rate:.0} tokens/s"));
        }
    }

    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}
