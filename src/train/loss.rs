//! What a training step minimises: the training articles encoded with their targets, and the loss
//! of a batch of their units (entity cross-entropy on labelled words plus weighted topic BCE on
//! each unit's whole article, pooled as the model pools it at inference).

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

/// Topic logits `[units, topics]` of the batch's units `units` (indices into `units_of_batch`),
/// each pooled over its whole article as the model pools it at inference (differentiable through
/// the unit's own windows; the rest runs `per_batch` windows at a time); `None` for a model
/// without topics.
fn unit_topic_logits(
    model: &NewsTagger,
    set: &TrainingSet,
    (batch, units_of_batch): (&Batch, &[Unit]),
    segment_sums: &Tensor,
    units: &[u32],
    per_batch: usize,
    mode: &mut Mode,
) -> anyhow::Result<Option<Tensor>> {
    let selected: Vec<Unit> = units.iter().map(|&u| units_of_batch[u as usize]).collect();
    let outside = outside_sums(model, set, &selected, per_batch.max(1))?;
    let articles = pool::UnitArticles::new(batch, segment_sums, units, &outside)?;
    let dev = model.device();
    match model.topic_pooling() {
        TopicPooling::Mean => model.topic_logits(&articles.article_means(units.len())?, mode),
        TopicPooling::SmoothMax { temperature } => {
            let temperature = Tensor::new(temperature.as_slice(), dev)?;
            let Some(z) = model.topic_logits(&articles.passage_means()?, mode)? else {
                return Ok(None);
            };
            let groups = articles.groups(units.len());
            let groups = PassageGroups::new(&groups, articles.rows.len(), dev)?;
            Ok(Some(groups.pool(&z, &temperature)?))
        }
    }
}

/// For each of `units`: the passage sums of its article's windows outside it, from the model in
/// inference mode (no dropout) with the gradient cut, run `per_batch` windows at a time; empty
/// for a unit that holds its whole article. This is what lets a long article's topic loss pool
/// the whole article while a batch holds only part of it.
fn outside_sums(
    model: &NewsTagger,
    set: &TrainingSet,
    units: &[Unit],
    per_batch: usize,
) -> anyhow::Result<Vec<pool::Outside>> {
    let mut outside = vec![pool::Outside::new(); units.len()];
    // (owner, piece): the rest of each unit's article, cut into pieces of at most `per_batch`.
    let mut pieces: Vec<(usize, Unit)> = Vec::new();
    for (k, u) in units.iter().enumerate() {
        let enc = &set.encoded[u.article];
        for (from, to) in [(0, u.windows.0), (u.windows.1, enc.windows.len())] {
            for start in (from..to).step_by(per_batch) {
                let end = (start + per_batch).min(to);
                pieces.push((k, Unit::new(u.article, enc, (start, end))));
            }
        }
    }
    let mut rest = pieces.as_slice();
    while !rest.is_empty() {
        let mut take = 0;
        let mut windows = 0;
        while take < rest.len() && (take == 0 || windows + rest[take].1.window_count() <= per_batch)
        {
            windows += rest[take].1.window_count();
            take += 1;
        }
        let (now, later) = rest.split_at(take);
        rest = later;
        let piece_units: Vec<Unit> = now.iter().map(|p| p.1).collect();
        let batch = Batch::new(&set.encoded, &piece_units, model.special, model.device())?;
        let sums = model
            .forward(&batch, &mut Mode::Infer)?
            .segment_sums
            .detach()
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        for (seg, sum) in batch.segments.iter().zip(sums) {
            let slot = outside[now[seg.unit].0]
                .entry(seg.passage)
                .or_insert_with(|| (vec![0.0; sum.len()], 0));
            for (s, v) in slot.0.iter_mut().zip(&sum) {
                *s += v;
            }
            slot.1 += seg.tokens;
        }
    }
    Ok(outside)
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
        if let Some(logits) = unit_topic_logits(
            model,
            set,
            (&batch, units),
            &out.segment_sums,
            &topic_units,
            opts.batch_windows,
            mode,
        )? {
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

    /// Each unit of an article longer than one unit is scored, in training, with the article's
    /// whole passages: in inference mode its topic logits are the ones `tag` gives the article.
    #[test]
    fn every_unit_of_a_long_article_is_trained_on_the_article_tag_scores() {
        use crate::data::Article;
        use crate::encode::units;
        use crate::infer::Predictor;
        let words = ["oil", "gas", "rose", "border", "tariffs", "army", "fell"];
        let mut model = crate::model::tiny::tiny_tagger(&words, 5).unwrap();
        let text = "Oil rose\n\nGas fell at the border. Army tariffs rose and oil fell again \
                    today.\nTariffs fell. The border army rose and gas rose again there.";
        let mut article = Article::from_text("a", text);
        article.topics = Some(vec!["energy".into()]);
        let opts = TrainOptions {
            batch_windows: 2,
            ..TrainOptions::default()
        };
        for pooling in [TopicPooling::Mean, TopicPooling::smooth_max(2)] {
            model.set_topic_pooling(pooling);
            let expected = Predictor::new(&model, 8)
                .unwrap()
                .predict(std::slice::from_ref(&article))
                .unwrap()
                .remove(0)
                .topic_logits;
            let set = TrainingSet::new(&model, std::slice::from_ref(&article)).unwrap();
            let all = units(&set.encoded, opts.batch_windows);
            assert!(all.len() >= 3, "{} units", all.len());
            // One unit alone, and two units of the article side by side in one batch.
            for batch_units in [&all[1..2], &all[..2], &all[all.len() - 1..]] {
                let batch =
                    Batch::new(&set.encoded, batch_units, model.special, model.device()).unwrap();
                let out = model.forward(&batch, &mut Mode::Infer).unwrap();
                let chosen: Vec<u32> = (0..batch_units.len() as u32).collect();
                let got = unit_topic_logits(
                    &model,
                    &set,
                    (&batch, batch_units),
                    &out.segment_sums,
                    &chosen,
                    opts.batch_windows,
                    &mut Mode::Infer,
                )
                .unwrap()
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
                for row in got {
                    for (g, e) in row.iter().zip(&expected) {
                        assert!((g - e).abs() < 1e-4, "{row:?} vs {expected:?}");
                    }
                }
            }
        }
    }
}
