//! A run's running state: where it stands and what it has counted so far. The training loop
//! updates it in place and checkpoints save it as it is (`latest.json`), so a resumed run starts
//! from exactly the numbers an uninterrupted one had.

use super::EpochRecord;
use serde::{Deserialize, Serialize};

/// Where a run stands: everything besides weights and moments that resuming needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Current epoch (0-based) and batches of it already done.
    pub epoch: usize,
    pub batch: usize,
    pub best_score: Option<f64>,
    pub bad_epochs: usize,
    pub history: Vec<EpochRecord>,
    /// Real sub-tokens trained on and seconds spent in training steps (for tokens/s).
    pub tokens: usize,
    pub train_seconds: f64,
    /// Sum and count of the losses of the current epoch so far, and the last learning rate: a run
    /// resumed mid-epoch records the same epoch train loss as an uninterrupted one.
    #[serde(default)]
    pub epoch_loss_sum: f64,
    #[serde(default)]
    pub epoch_loss_count: usize,
    #[serde(default)]
    pub lr: f64,
    /// Whether the topic head of the kept model has been refitted (the run's last stage).
    #[serde(default)]
    pub topic_head_refitted: bool,
    /// Whether the kept model's scores have been calibrated on dev (after the refit).
    #[serde(default)]
    pub calibrated: bool,
    /// The checkpoint directory (under `checkpoints/`) holding this state's weights.
    pub dir: String,
}

impl TrainState {
    /// Counts a finished optimiser step: batch `batch` (1-based) of epoch `epoch`, with its loss,
    /// the real sub-tokens it saw and the seconds it took.
    pub fn count_step(
        &mut self,
        epoch: usize,
        batch: usize,
        loss: f64,
        tokens: usize,
        seconds: f64,
    ) {
        self.step += 1;
        self.epoch = epoch;
        self.batch = batch;
        self.tokens += tokens;
        self.train_seconds += seconds;
        self.epoch_loss_sum += loss;
        self.epoch_loss_count += 1;
    }

    /// Mean loss of the current epoch's steps so far (NaN before its first).
    pub fn epoch_train_loss(&self) -> f64 {
        if self.epoch_loss_count > 0 {
            self.epoch_loss_sum / self.epoch_loss_count as f64
        } else {
            f64::NAN
        }
    }

    /// Real sub-tokens per second over the training steps so far.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.train_seconds.max(1e-9)
    }

    /// Closes epoch `epoch` after its evaluation: its loss count starts again, and when all
    /// its batches are done the next epoch starts at its first batch.
    pub fn end_epoch(&mut self, epoch: usize, finished: bool) {
        self.epoch_loss_sum = 0.0;
        self.epoch_loss_count = 0;
        if finished {
            self.epoch = epoch + 1;
            self.batch = 0;
        }
    }
}
