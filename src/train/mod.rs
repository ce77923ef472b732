//! Fine-tuning: AdamW with warm-up and decay, gradient clipping, evaluation on dev after each
//! epoch, the best model kept, early stopping, and checkpoints a killed run resumes from exactly.

pub mod calibrate;
pub mod checkpoint;
pub mod curves;
mod loss;
pub mod optim;
pub mod progress;
pub mod topic_head;

use crate::data::Article;
use crate::encode::{epoch_batches, units};
use crate::eval::{evaluate, Evaluation};
use crate::fsutil::write_atomic;
use crate::infer::Predictor;
use crate::model::bert::{Dropout, Mode};
use crate::model::NewsTagger;
use anyhow::Context;
use checkpoint::{Checkpoint, TrainState};
use loss::{batch_loss, ensure_usable, TrainingSet};
use optim::{clip_grad_norm, learning_rate, AdamW, AdamWConfig};
use progress::Progress;
use serde::{Deserialize, Serialize};
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
    let set = TrainingSet::new(model, train)?;
    anyhow::ensure!(!set.is_empty(), "no training articles");
    let units = units(&set.encoded, opts.batch_windows);
    let steps_per_epoch = epoch_batches(&units, opts.batch_windows, opts.seed, 0).len();
    let mut total_steps = steps_per_epoch * opts.epochs;
    if let Some(m) = opts.max_steps {
        total_steps = total_steps.min(m);
    }
    let warmup = ((total_steps as f64) * opts.warmup).round() as usize;

    let vars = model.vars();
    let adam = AdamWConfig {
        lr: opts.lr,
        weight_decay: opts.weight_decay,
        ..Default::default()
    };
    let mut optimizer = AdamW::new(vars.clone(), adam)?;
    let mut state = resume.unwrap_or_default();
    if state.step > 0 {
        let moments = Checkpoint::load_optimizer(out, &state)?;
        optimizer.restore(&moments, state.step)?;
    }
    let ckpt = Checkpoint::new(out);
    let mut progress = Progress::new(total_steps, state.step);
    let mut tokens_done = state.tokens;
    let mut train_time = state.train_seconds;
    let mut loss_sum = state.epoch_loss_sum;
    let mut loss_count = state.epoch_loss_count;
    let mut lr = state.lr;
    // A run checkpointed after its final evaluation (step budget spent, or stopped early) is
    // complete: resuming it must neither train nor evaluate (and record) again.
    let complete = state.history.last().is_some_and(|r| r.step == state.step)
        && (state.step >= total_steps || (!dev.is_empty() && state.bad_epochs >= opts.patience));
    let first_epoch = if complete { opts.epochs } else { state.epoch };

    'epochs: for epoch in first_epoch..opts.epochs {
        let batches = epoch_batches(&units, opts.batch_windows, opts.seed, epoch);
        let skip = if epoch == state.epoch { state.batch } else { 0 };
        for (bi, batch_units) in batches.iter().enumerate().skip(skip) {
            if state.step >= total_steps {
                break;
            }
            let t0 = Instant::now();
            lr = learning_rate(state.step, warmup, total_steps, opts.lr);
            let step_seed = opts.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ state.step as u64;
            if !model.device().is_cpu() {
                // Off the CPU, dropout masks are drawn on the device from its own generator
                // (ops::device_mask): seeded per step, a resumed run draws the same masks.
                model.device().set_seed(step_seed)?;
            }
            let mut mode = Mode::Train(Dropout::new(&model.config.bert, step_seed));
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
            let mut grads = loss.backward()?;
            let grad_norm = clip_grad_norm(&vars, &mut grads, opts.max_grad_norm)?;
            if !grad_norm.is_finite() {
                anyhow::bail!(
                    "the gradient norm became {grad_norm} at step {} (epoch {}): stopping; {}. Try a lower --lr.",
                    state.step + 1,
                    epoch + 1,
                    Checkpoint::last_good(out)
                );
            }
            optimizer.step(&grads, lr)?;
            state.step += 1;
            state.epoch = epoch;
            state.batch = bi + 1;
            tokens_done += tokens;
            train_time += t0.elapsed().as_secs_f64();
            loss_sum += loss_value;
            loss_count += 1;
            progress.step(loss_value, lr, tokens_done as f64 / train_time.max(1e-9));
            if opts.checkpoint_every > 0 && state.step.is_multiple_of(opts.checkpoint_every) {
                ensure_usable(model, &set, batch_units, opts, out, state.step, epoch)?;
                state.tokens = tokens_done;
                state.train_seconds = train_time;
                (state.epoch_loss_sum, state.epoch_loss_count, state.lr) =
                    (loss_sum, loss_count, lr);
                ckpt.save(model, &optimizer, &state)?;
            }
        }
        // End of the epoch (or of the step budget): evaluate, keep the best, checkpoint. The last
        // step's update has not been looked at yet: weights it made unusable must neither be
        // evaluated (NaN scores) nor saved over the run's model.
        let finished_epoch = state.batch >= batches.len();
        let step = state.step;
        ensure_usable(model, &set, &batches[0], opts, out, step, epoch)?;
        let record = evaluate_and_keep(
            model,
            dev,
            out,
            &mut state,
            EpochRecord {
                epoch: epoch + 1,
                step,
                train_loss: if loss_count > 0 {
                    loss_sum / loss_count as f64
                } else {
                    f64::NAN
                },
                lr,
                elapsed_s: started.elapsed().as_secs_f64(),
                tokens_per_s: tokens_done as f64 / train_time.max(1e-9),
                dev: None,
                score: None,
                thresholds: Vec::new(),
                note: None,
            },
        )?;
        progress.println(&record_line(&record));
        loss_sum = 0.0;
        loss_count = 0;
        if finished_epoch {
            state.epoch = epoch + 1;
            state.batch = 0;
        }
        state.tokens = tokens_done;
        state.train_seconds = train_time;
        (state.epoch_loss_sum, state.epoch_loss_count, state.lr) = (0.0, 0, lr);
        ckpt.save(model, &optimizer, &state)?;
        if state.step >= total_steps || (!dev.is_empty() && state.bad_epochs >= opts.patience) {
            break 'epochs;
        }
    }
    if !state.topic_head_refitted && !model.topics().is_empty() {
        progress.println("refitting the topic head on the kept model's article embeddings");
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
        tokens_per_s: tokens_done as f64 / train_time.max(1e-9),
    })
}

fn record_line(r: &EpochRecord) -> String {
    let score = r.score.map_or("-".to_string(), |s| format!("{s:.4}"));
    format!(
        "epoch {} step {}: train loss {:.4}, dev score {score}, {:.0} tokens/s, {:.0}s",
        r.epoch, r.step, r.train_loss, r.tokens_per_s, r.elapsed_s
    )
}

/// Scores dev (choosing topic thresholds there), records the epoch in `metrics.jsonl`, and saves the
/// model to `out` when it is the best so far (or always, without dev).
fn evaluate_and_keep(
    model: &mut NewsTagger,
    dev: &[Article],
    out: &Path,
    state: &mut TrainState,
    mut record: EpochRecord,
) -> anyhow::Result<EpochRecord> {
    let improved = if dev.is_empty() {
        true
    } else {
        let Evaluation {
            report,
            thresholds,
            predictions,
        } = evaluate(&Predictor::new(model, 32)?, dev, true)?;
        if let Some((a, _)) = dev.iter().zip(&predictions).find(|(_, p)| !is_finite(p)) {
            anyhow::bail!(
                "the predictions for dev article {:?} became non-finite after step {} (epoch {}): stopping; {}. Try a lower --lr.",
                a.id,
                record.step,
                record.epoch,
                Checkpoint::last_good(out)
            );
        }
        let score = selection_score(&report);
        record.dev = Some(serde_json::to_value(&report)?);
        record.score = Some(score);
        record.thresholds = thresholds.clone();
        let better = state.best_score.is_none_or(|b| score > b);
        if better {
            model.set_thresholds(thresholds);
            state.best_score = Some(score);
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
        }
        better
    };
    if improved {
        model
            .save(out)
            .with_context(|| format!("{}: cannot save the model", out.display()))?;
    }
    state.history.push(record.clone());
    write_history(out, &state.history)?;
    Ok(record)
}

/// Whether every number of a prediction is finite.
fn is_finite(p: &crate::infer::ArticlePrediction) -> bool {
    let scores = p.entities.iter().map(|e| &e.score);
    p.embedding
        .iter()
        .chain(&p.topic_probs)
        .chain(scores)
        .all(|v| v.is_finite())
}

/// Writes `metrics.jsonl` and the curves from the run's history.
fn write_history(out: &Path, history: &[EpochRecord]) -> anyhow::Result<()> {
    let mut lines = String::new();
    for r in history {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    write_atomic(&out.join("metrics.jsonl"), lines.as_bytes())?;
    curves::update(out, history);
    Ok(())
}

/// Refits the topic head of the kept model (the one in `out`), saves and returns it; with dev,
/// records the refitted model's dev scores as a last history entry.
fn refit_topic_head(
    model: &NewsTagger,
    train: &[Article],
    dev: &[Article],
    out: &Path,
    state: &mut TrainState,
) -> anyhow::Result<NewsTagger> {
    let mut kept = NewsTagger::load(out, model.device())?;
    if let Err(e) = topic_head::refit(&mut kept, train, dev, 32) {
        return Err(match e.downcast_ref::<topic_head::NonFiniteEmbedding>() {
            Some(bad) => anyhow::anyhow!(
                "{bad} under the kept model in {}: stopping before the topic head refit; {}. Try a lower --lr.",
                out.display(),
                Checkpoint::last_good(out)
            ),
            None => e,
        });
    }
    kept.save(out)
        .with_context(|| format!("{}: cannot save the model", out.display()))?;
    if dev.is_empty() {
        return Ok(kept);
    }
    let Evaluation {
        report, thresholds, ..
    } = evaluate(&Predictor::new(&kept, 32)?, dev, false)?;
    let mut record = state
        .history
        .last()
        .cloned()
        .expect("an evaluated run has history");
    record.score = Some(selection_score(&report));
    record.dev = Some(serde_json::to_value(&report)?);
    record.thresholds = thresholds;
    record.note = Some("topic head refit stage (refitted head kept only if better on dev)".into());
    state.best_score = record.score;
    state.history.push(record);
    write_history(out, &state.history)?;
    Ok(kept)
}

/// Calibrates the scores of the kept model (the one in `out`) on dev, saves and returns it.
fn calibrate_kept(
    model: &NewsTagger,
    dev: &[Article],
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<NewsTagger> {
    let mut kept = NewsTagger::load(out, model.device())?;
    if let Some(f) = calibrate::calibrate(&mut kept, dev, 32)? {
        let ece = |c: &crate::eval::Calibration| {
            let part = |r: &Option<crate::eval::Reliability>| {
                r.as_ref()
                    .map_or("-".to_string(), |r| format!("{:.3}", r.ece))
            };
            format!("entities {}, topics {}", part(&c.entities), part(&c.topics))
        };
        progress.println(&format!(
            "calibrated the scores on dev: entity temperature {:.2}, Platt scaling for {} topic(s); dev ECE {} before, {} after (fitted on dev)",
            f.calibration.entity_temperature,
            f.calibration.topics.len(),
            ece(&f.before),
            ece(&f.after)
        ));
        kept.save(out)
            .with_context(|| format!("{}: cannot save the model", out.display()))?;
    }
    Ok(kept)
}

/// Mean of entity micro-F1 and topic micro-F1 (those the report has).
fn selection_score(report: &crate::eval::Report) -> f64 {
    let parts: Vec<f64> = report
        .entities
        .iter()
        .map(|e| e.micro.f1)
        .chain(report.topics.iter().map(|t| t.micro.f1))
        .collect();
    if parts.is_empty() {
        0.0
    } else {
        parts.iter().sum::<f64>() / parts.len() as f64
    }
}
