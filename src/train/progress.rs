//! Training progress: an indicatif bar with loss, learning rate, tokens/s and ETA on a terminal;
//! plain lines (about 50 per run) when stderr is a file or a pipe.

use crate::infer::progress::TerminalBar;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Instant;

pub struct Progress {
    bar: TerminalBar,
    total: usize,
    done: usize,
    every: usize,
    started: Instant,
    first: usize,
    loss_ema: Option<f64>,
}

impl Progress {
    pub fn new(total: usize, done: usize) -> Self {
        let bar = TerminalBar::new(|| {
            ProgressBar::new(total as u64)
                .with_position(done as u64)
                .with_style(
                    ProgressStyle::with_template(
                        "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                    )
                    .expect("valid template"),
                )
        });
        Progress {
            bar,
            total,
            done,
            every: (total / 50).max(1),
            started: Instant::now(),
            first: done,
            loss_ema: None,
        }
    }

    pub fn step(&mut self, loss: f64, lr: f64, tokens_per_s: f64) {
        self.done += 1;
        let ema = self.loss_ema.map_or(loss, |e| 0.95 * e + 0.05 * loss);
        self.loss_ema = Some(ema);
        let msg = format!("loss {ema:.4}  lr {lr:.2e}  {tokens_per_s:.0} tok/s");
        match self.bar.bar() {
            Some(bar) => {
                bar.set_position(self.done as u64);
                bar.set_message(msg);
            }
            None if self.done.is_multiple_of(self.every) || self.done == self.total => {
                let per_step =
                    self.started.elapsed().as_secs_f64() / (self.done - self.first) as f64;
                let eta = per_step * (self.total - self.done) as f64;
                eprintln!("step {}/{}  {msg}  eta {:.0}s", self.done, self.total, eta);
            }
            None => {}
        }
    }

    /// Prints a line without disturbing the bar.
    pub fn println(&self, line: &str) {
        self.bar.println(line);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}
