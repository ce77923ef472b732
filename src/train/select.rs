//! Choosing the model a run keeps: evaluation on dev after each epoch (the best model saved,
//! `metrics.jsonl` and the curves written), then the kept model's topic head refit and score
//! calibration, the run's last stages.

use super::checkpoint::Checkpoint;
use super::progress::Progress;
use super::state::TrainState;
use super::{calibrate, curves, topic_head, EpochRecord};
use crate::data::Article;
use crate::eval::{evaluate, Evaluation};
use crate::fsutil::write_atomic;
use crate::infer::Predictor;
use crate::model::NewsTagger;
use anyhow::Context;
use std::path::Path;

/// The line the progress shows for an evaluated epoch.
pub(crate) fn record_line(r: &EpochRecord) -> String {
    let score = r.score.map_or("-".to_string(), |s| format!("{s:.4}"));
    format!(
        "epoch {} step {}: train loss {:.4}, dev score {score}, {:.0} tokens/s, {:.0}s",
        r.epoch, r.step, r.train_loss, r.tokens_per_s, r.elapsed_s
    )
}

/// Scores dev (choosing topic thresholds there), records the epoch in `metrics.jsonl`, and saves the
/// model to `out` when it is the best so far (or always, without dev).
pub(crate) fn evaluate_and_keep(
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
pub(crate) fn refit_topic_head(
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
pub(crate) fn calibrate_kept(
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
