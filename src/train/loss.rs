//! What a training step minimises: the training articles encoded with their targets, and the loss
//! of a batch of their units (entity cross-entropy on labelled words plus weighted topic BCE on
//! each unit's passages, pooled as the model pools them at inference).

use super::checkpoint::{first_non_finite, Checkpoint};
use super::TrainOptions;
use crate::data::{tags_from_entities, Article};
use crate::encode::{encode_article, pool, Batch, EncodedArticle, Unit};
use crate::model::bert::Mode;
use crate::model::topic_pooling::{PassageGroups, TopicPooling};
use crate::model::NewsTagger;
use candle_core::{DType, Tensor};
use std::path::Path;

/// The training articles, encoded, with their targets (both indexed by article, as units are).
pub(crate) struct TrainingSet {
    pub encoded: Vec<EncodedArticle>,
    pub targets: Vec<Targets>,
}

/// An article's BIO targets per word and topic targets, where annotated.
pub(crate) struct Targets {
    tags: Option<Vec<u32>>,
    topics: Option<Vec<f32>>,
}

impl TrainingSet {
    /// Encodes `articles` and reads their targets in the model's tag and topic order.
    pub fn new(model: &NewsTagger, articles: &[Article]) -> anyhow::Result<Self> {
        let topics = model.topics();
        let mut set = TrainingSet {
            encoded: Vec::with_capacity(articles.len()),
            targets: Vec::with_capacity(articles.len()),
        };
        for a in articles {
            set.encoded
                .push(encode_article(&model.tokenizer, a, model.window())?);
            let tags = match &a.entities {
                Some(e) => Some(
                    tags_from_entities(a.words().len(), e)
                        .iter()
                        .map(|t| {
                            model.tags.index(t).map(|i| i as u32).ok_or_else(|| {
                                anyhow::anyhow!(
                                    "article {:?}: tag {t} is not in the model's label set",
                                    a.id
                                )
                            })
                        })
                        .collect::<anyhow::Result<Vec<u32>>>()?,
                ),
                None => None,
            };
            let topic_targets = a.topics.as_ref().filter(|_| !topics.is_empty()).map(|t| {
                topics
                    .iter()
                    .map(|k| if t.contains(k) { 1.0 } else { 0.0 })
                    .collect()
            });
            set.targets.push(Targets {
                tags,
                topics: topic_targets,
            });
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }
}

/// Numerically stable binary cross-entropy on logits, averaged.
fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    // softplus(x) = -log(1 - sigmoid(x)); softplus(x) - x = -log(sigmoid(x)).
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    ((targets * (&softplus - logits)?)? + ((1.0 - targets)? * softplus)?)?.mean_all()
}

/// Topic logits `[units, topics]` of the batch's units `units`, pooled as the model pools them at
/// inference (differentiable); `None` for a model without topics.
fn unit_topic_logits(
    model: &NewsTagger,
    batch: &Batch,
    segment_sums: &Tensor,
    units: &[u32],
    mode: &mut Mode,
) -> anyhow::Result<Option<Tensor>> {
    let dev = model.device();
    let temperature = match model.topic_pooling() {
        TopicPooling::Mean => {
            let pooled = pool::unit_means(batch, segment_sums)?
                .index_select(&Tensor::new(units, dev)?, 0)?;
            return model.topic_logits(&pooled, mode);
        }
        TopicPooling::SmoothMax { temperature } => Tensor::new(temperature.as_slice(), dev)?,
    };
    let Some(z) = model.topic_logits(&pool::passage_means(batch, segment_sums)?, mode)? else {
        return Ok(None);
    };
    // Each unit's passages, in order.
    let mut groups: Vec<Vec<(u32, usize)>> = vec![Vec::new(); units.len()];
    for (s, p) in batch.unit_passages.iter().enumerate() {
        if let Some(i) = units.iter().position(|&u| u as usize == p.unit) {
            groups[i].push((s as u32, p.tokens));
        }
    }
    let groups = PassageGroups::new(&groups, batch.unit_passages.len(), dev)?;
    Ok(Some(groups.pool(&z, &temperature)?))
}

/// The loss of one batch of `units`, and the real sub-tokens it saw: entity cross-entropy on
/// labelled words, plus weighted topic BCE.
pub(crate) fn batch_loss(
    model: &NewsTagger,
    set: &TrainingSet,
    units: &[Unit],
    opts: &TrainOptions,
    mode: &mut Mode,
) -> anyhow::Result<(Tensor, usize)> {
    let batch = Batch::new(&set.encoded, units, model.special, model.device())?;
    let out = model.forward(&batch, mode)?;
    let dev = model.device();
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (r, (unit, word)) in batch.words.iter().enumerate() {
        if let Some(tags) = &set.targets[units[*unit].article].tags {
            rows.push(r as u32);
            targets.push(tags[*word]);
        }
    }
    let mut loss: Option<Tensor> = None;
    if !rows.is_empty() {
        let logits = if rows.len() == batch.words.len() {
            out.entity_logits.clone()
        } else {
            out.entity_logits
                .index_select(&Tensor::new(rows.as_slice(), dev)?, 0)?
        };
        let targets = Tensor::new(targets.as_slice(), dev)?;
        loss = Some(candle_nn::loss::cross_entropy(&logits, &targets)?);
    }
    // Units without a sub-token have no passage to read topics from.
    let topic_units: Vec<u32> = (0..units.len())
        .filter(|&i| set.targets[units[i].article].topics.is_some())
        .filter(|&i| batch.segments.iter().any(|s| s.unit == i))
        .map(|i| i as u32)
        .collect();
    if !topic_units.is_empty() && opts.topic_weight > 0.0 {
        if let Some(logits) =
            unit_topic_logits(model, &batch, &out.segment_sums, &topic_units, mode)?
        {
            let t: Vec<f32> = topic_units
                .iter()
                .flat_map(|&i| {
                    set.targets[units[i as usize].article]
                        .topics
                        .clone()
                        .unwrap()
                })
                .collect();
            let t = Tensor::from_vec(t, logits.shape(), dev)?;
            let topic_loss = (bce_with_logits(&logits, &t)? * opts.topic_weight)?;
            loss = Some(match loss {
                Some(l) => (l + topic_loss)?,
                None => topic_loss,
            });
        }
    }
    let loss = match loss {
        Some(l) => l,
        None => Tensor::zeros((), DType::F32, dev)?,
    };
    Ok((loss, batch.real_tokens))
}

/// Stops the run (with the message a non-finite training loss gives) when the weights after step
/// `step` hold a NaN or an infinity, or give a non-finite loss on `probe` (finite but huge weights
/// do: a `--lr` far too high).
pub(crate) fn ensure_usable(
    model: &NewsTagger,
    set: &TrainingSet,
    probe: &[Unit],
    opts: &TrainOptions,
    out: &Path,
    step: usize,
    epoch: usize,
) -> anyhow::Result<()> {
    if let Some(name) = first_non_finite(model)? {
        anyhow::bail!(
            "the weights became non-finite at step {step} (epoch {}, tensor {name}): stopping; {}. Try a lower --lr.",
            epoch + 1,
            Checkpoint::last_good(out)
        );
    }
    let (loss, _) = batch_loss(model, set, probe, opts, &mut Mode::Infer)?;
    let loss = loss.to_scalar::<f32>()?;
    if !loss.is_finite() {
        anyhow::bail!(
            "the loss became {loss} after step {step} (epoch {}): stopping; {}. Try a lower --lr.",
            epoch + 1,
            Checkpoint::last_good(out)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_matches_the_formula_and_stays_finite() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0f32, 100.0], [-100.0, 2.0]], &dev).unwrap();
        let targets = Tensor::new(&[[1f32, 0.0], [1.0, 1.0]], &dev).unwrap();
        let got = bce_with_logits(&logits, &targets)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let sp = |x: f32| (1.0 + x.exp()).ln();
        // -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x).
        let want = (sp(0.0) + 100.0 + 100.0 + sp(-2.0)) / 4.0;
        assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    }
}
