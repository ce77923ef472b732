//! Fine-tuning: AdamW with warm-up and decay, gradient clipping, evaluation on dev after each
//! epoch, the best model kept, early stopping, and checkpoints a killed run resumes from exactly.
//!
//! The loop is here; a step's loss is in `loss.rs`, evaluation on dev and the kept model's last
//! stages in `select.rs`, the running state it updates (and checkpoints save) in [`state`].

pub mod calibrate;
pub mod checkpoint;
pub mod curves;
mod loss;
pub mod optim;
pub mod progress;
mod select;
pub mod state;
pub mod topic_head;

use crate::data::{augment, Article};
use crate::encode::{epoch_batches, units};
use crate::model::bert::{Dropout, Mode};
use crate::model::NewsTagger;
use checkpoint::Checkpoint;
use loss::{batch_loss, ensure_usable, TrainingSet};
use optim::{learning_rate, AdamW, AdamWConfig};
use progress::Progress;
use select::{calibrate_kept, evaluate_and_keep, record_line, refit_topic_head};
use serde::{Deserialize, Serialize};
pub use state::TrainState;
use std::path::Path;
use std::time::Instant;

/// Training hyper-parameters (saved with the run as `training_args.json` along with the inputs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    pub epochs: usize,
    /// Stop after this many optimiser steps (the schedule is planned for them).
    pub max_steps: Option<usize>,
    /// Windows per batch.
    pub batch_windows: usize,
    pub lr: f64,
    /// Fraction of steps spent warming up.
    pub warmup: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    /// Weight of the topic loss against the entity loss.
    pub topic_weight: f64,
    /// Epochs without improvement on dev before stopping.
    pub patience: usize,
    pub seed: u64,
    /// Save a resumable checkpoint every this many steps (0: only at the end of each epoch).
    pub checkpoint_every: usize,
    /// Add joined pairs of topic-annotated articles and articles with a paragraph moved
    /// ([`crate::data::augment`]). Runs saved before it existed did not.
    #[serde(default)]
    pub augment: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 3,
            max_steps: None,
            batch_windows: 8,
            lr: 1e-4,
            warmup: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            topic_weight: 1.0,
            patience: 2,
            seed: 42,
            checkpoint_every: 200,
            augment: true,
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub lr: f64,
    pub elapsed_s: f64,
    /// Real (non-padding) sub-tokens per second over the training steps so far.
    pub tokens_per_s: f64,
    pub dev: Option<serde_json::Value>,
    /// Selection score: mean of entity micro-F1 and topic micro-F1 on dev (those available).
    pub score: Option<f64>,
    pub thresholds: Vec<f32>,
    /// What this record is when it is not an ordinary end-of-epoch evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    pub best_score: Option<f64>,
    pub history: Vec<EpochRecord>,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
}

/// Fine-tunes `model` on `train`, evaluating on `dev` after each epoch, writing the best model,
/// `metrics.jsonl` and resumable checkpoints into `out`. With `resume`, continues that checkpoint.
pub fn train(
    model: &mut NewsTagger,
    train: &[Article],
    dev: &[Article],
    opts: &TrainOptions,
    out: &Path,
    resume: Option<TrainState>,
) -> anyhow::Result<TrainSummary> {
    let started = Instant::now();
    let added = if opts.augment && !model.topics().is_empty() {
        augment::augmented(train, opts.seed)
    } else {
        Vec::new()
    };
    // The given articles are copied only when there is something to add to them.
    let combined: Vec<Article>;
    let train = if added.is_empty() {
        train
    } else {
        combined = train.iter().chain(&added).cloned().collect();
        combined.as_slice()
    };
    let set = TrainingSet::new(model, train)?;
    anyhow::ensure!(!set.is_empty(), "no training articles");
    let units = units(&set.encoded, opts.batch_windows);
    // Each epoch packs its shuffled units anew, so epochs differ by a batch or two: the schedule
    // counts every epoch's own batches.
    let mut total_steps: usize = (0..opts.epochs)
        .map(|e| epoch_batches(&units, opts.batch_windows, opts.seed, e).len())
        .sum();
    if let Some(m) = opts.max_steps {
        total_steps = total_steps.min(m);
    }
    let warmup = ((total_steps as f64) * opts.warmup).round() as usize;

    let adam = AdamWConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(model.vars(), adam)?;
    let mut state = resume.unwrap_or_default();
    if state.step > 0 {
        let moments = Checkpoint::load_optimizer(out, &state)?;
        optimizer.restore(&moments, state.step)?;
    }
    let ckpt = Checkpoint::new(out);
    let mut progress = Progress::new(total_steps, state.step);
    if !added.is_empty() {
        progress.println(&format!(
            "augmentation: {} articles added to {} (pairs joined, paragraphs moved; --no-augment turns it off)",
            added.len(),
            train.len() - added.len()
        ));
    }
    // The step budget is spent, or dev stopped improving.
    let stops = |state: &TrainState| {
        state.step >= total_steps || (!dev.is_empty() && state.bad_epochs >= opts.patience)
    };
    // A run checkpointed after its final evaluation is complete: resuming it must neither train
    // nor evaluate (and record) again.
    let complete = state.history.last().is_some_and(|r| r.step == state.step) && stops(&state);
    let first_epoch = if complete { opts.epochs } else { state.epoch };

    for epoch in first_epoch..opts.epochs {
        let batches = epoch_batches(&units, opts.batch_windows, opts.seed, epoch);
        let skip = if epoch == state.epoch { state.batch } else { 0 };
        for (bi, batch_units) in batches.iter().enumerate().skip(skip) {
            if state.step >= total_steps {
                break;
            }
            let t0 = Instant::now();
            state.lr = learning_rate(state.step, warmup, total_steps, opts.lr);
            let step_seed = opts.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ state.step as u64;
            if !model.device().is_cpu() {
                // Off the CPU, dropout masks are drawn on the device from its own generator
                // (ops::device_mask): seeded per step, a resumed run draws the same masks.
                model.device().set_seed(step_seed)?;
            }
            let mut mode = Mode::train(Dropout::new(&model.config.bert, step_seed));
            let (loss, tokens) = batch_loss(model, &set, batch_units, opts, &mut mode)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                anyhow::bail!(
                    "the loss became {loss_value} at step {} (epoch {}): stopping; {}. Try a lower --lr.",
                    state.step + 1,
                    epoch + 1,
                    Checkpoint::last_good(out)
                );
            }
            let grads = mode.backward(&loss)?;
            let grad_norm = optimizer.step_clipped(&grads, state.lr, opts.max_grad_norm)?;
            if !grad_norm.is_finite() {
                anyhow::bail!(
                    "the gradient norm became {grad_norm} at step {} (epoch {}): stopping; {}. Try a lower --lr.",
                    state.step + 1,
                    epoch + 1,
                    Checkpoint::last_good(out)
                );
            }
            let seconds = t0.elapsed().as_secs_f64();
            state.count_step(epoch, bi + 1, loss_value, tokens, seconds);
            progress.step(loss_value, state.lr, state.tokens_per_s());
            if opts.checkpoint_every > 0 && state.step.is_multiple_of(opts.checkpoint_every) {
                ensure_usable(model, &set, batch_units, opts, out, state.step, epoch)?;
                ckpt.save(model, &optimizer, &state)?;
            }
        }
        // End of the epoch (or of the step budget): evaluate, keep the best, checkpoint. The last
        // step's update has not been looked at yet: weights it made unusable must neither be
        // evaluated (NaN scores) nor saved over the run's model.
        let finished_epoch = state.batch >= batches.len();
        let step = state.step;
        ensure_usable(model, &set, &batches[0], opts, out, step, epoch)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            step,
            train_loss: state.epoch_train_loss(),
            lr: state.lr,
            elapsed_s: started.elapsed().as_secs_f64(),
            tokens_per_s: state.tokens_per_s(),
            dev: None,
            score: None,
            thresholds: Vec::new(),
            note: None,
        };
        let record = evaluate_and_keep(model, dev, out, &mut state, record)?;
        progress.println(&record_line(&record));
        state.end_epoch(epoch, finished_epoch);
        ckpt.save(model, &optimizer, &state)?;
        if stops(&state) {
            break;
        }
    }
    if !state.topic_head_refitted && !model.topics().is_empty() {
        progress.println("refitting the topic head on the kept model's passage states");
        let kept = refit_topic_head(model, train, dev, out, &mut state)?;
        state.topic_head_refitted = true;
        ckpt.save(model, &optimizer, &state)?;
        // The caller gets the model the run kept, as saved.
        *model = kept;
    }
    if !state.calibrated && !dev.is_empty() {
        let kept = calibrate_kept(model, dev, out, &progress)?;
        state.calibrated = true;
        ckpt.save(model, &optimizer, &state)?;
        *model = kept;
    }
    progress.finish();
    Ok(TrainSummary {
        steps: state.step,
        best_score: state.best_score,
        history: state.history.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
        tokens_per_s: state.tokens_per_s(),
    })
}
