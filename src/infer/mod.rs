//! Batched inference: articles in, scored entities and topic probabilities out.
//!
//! Articles are encoded into windows and units ([`crate::encode`]), units of similar length are
//! batched together (little padding), each word is classified in the window that owns it, and
//! topics are read from the article's passages ([`crate::encode::pool`], [`topics`]).

pub mod decode;
pub mod html;
pub mod marginals;
pub mod output;
pub mod progress;
pub mod run;
pub mod topics;

use crate::data::Article;
use crate::encode::pool::ArticleSums;
use crate::encode::{encode_article, inference_batches, units, Batch, EncodedArticle, Unit};
use crate::model::bert::{Mode, Prepared};
use crate::model::calibration::{sigmoid, tempered};
use crate::model::{NewsTagger, Precision};
pub use decode::{Pieces, ScoredEntity};
use rayon::prelude::*;
pub use topics::PassageState;

/// What the model says about one article.
#[derive(Debug, Clone)]
pub struct ArticlePrediction {
    pub entities: Vec<ScoredEntity>,
    /// Probability of each of the model's topics, in model order (calibrated when the model is).
    pub topic_probs: Vec<f32>,
    /// The topic head's logits, in model order (what calibration is fitted on).
    pub topic_logits: Vec<f32>,
    /// Each word's tag distribution (uncalibrated); kept only by a predictor made
    /// [`Predictor::keeping_word_probs`], empty otherwise.
    pub word_probs: Vec<Vec<f32>>,
    /// For each topic, in model order, the byte range in the text of the passage that the topic
    /// head scores highest (the evidence for the topic; `None` without passages).
    pub topic_evidence: Vec<Option<std::ops::Range<usize>>>,
    /// The article's embedding: the mean hidden state over all its sub-tokens.
    pub embedding: Vec<f32>,
    /// Each passage's state, in order; kept only by a predictor made
    /// [`Predictor::keeping_passages`], empty otherwise.
    pub passages: Vec<PassageState>,
    /// How the article's words group into the pieces the model tags (to decode `word_probs`).
    pub pieces: Pieces,
    /// Sub-tokens the article has (excluding special tokens and padding). With none, the model
    /// saw nothing: no entities, every topic probability 0 (`tag` writes an error record).
    pub tokens: usize,
}

impl ArticlePrediction {
    /// Topics at or above their thresholds, with probabilities.
    pub fn topics_above<'a>(
        &self,
        topics: &'a [String],
        thresholds: &[f32],
    ) -> Vec<(&'a str, f32)> {
        topics
            .iter()
            .zip(thresholds)
            .zip(&self.topic_probs)
            .filter(|((_, &th), &p)| p >= th)
            .map(|((t, _), &p)| (t.as_str(), p))
            .collect()
    }
}

/// What a forward pass costs beyond its padded slots on the CPU, in slots (batches running side
/// by side hide most of it). `newstag serve` at 64 clients with the CoNLL test sentences, MiniLM
/// int8 on 2 Xeon cores, requests/s over two rounds: 8 slots 619-620, 16: 585-586, 32: 554-614,
/// 64: 532-586, 128: 470-531 (`tag` over whole files is the same within its noise).
const CPU_BATCH_OVERHEAD_SLOTS: usize = 8;

/// The same on a GPU, where each pass launches every kernel again: set high, so batches there
/// are cut only where lengths differ a great deal (half of a default batch, 32 windows of 256).
const DEVICE_BATCH_OVERHEAD_SLOTS: usize = 4096;

/// The most padded slots of a batch on the CPU (a unit alone may exceed it): its largest buffer,
/// the feed-forward layer's `[slots, intermediate]` (1,536 wide in MiniLM), then stays under the
/// 32 MiB above which glibc maps fresh pages for every buffer (`runtime::tune_allocator`): 32
/// windows of 256 sub-tokens spent 4% of `tag` faulting pages in. On the 1,000-word articles,
/// AMX Xeon, fp32: 4,096 slots 4.05-4.30 s, 2,048 slots 3.97-4.17 s (int8 2.05-2.26 against
/// 2.02-2.05); the sentences the same either way.
const CPU_BATCH_SLOTS: usize = 2048;

/// One batch's tag distributions (a row per word the batch owns) and passage-segment sums.
struct BatchOutput {
    batch: Batch,
    probs: Vec<Vec<f32>>,
    sums: Vec<Vec<f32>>,
}

/// Runs a model over articles in batches of at most `batch_windows` windows.
pub struct Predictor<'m> {
    model: &'m NewsTagger,
    /// Inference copies of the weights, taken when the predictor is made (`None` off the CPU in
    /// f32).
    prepared: Option<Prepared>,
    batch_windows: usize,
    keep_word_probs: bool,
    keep_passages: bool,
}

impl<'m> Predictor<'m> {
    /// A predictor on the model's current weights: one made before the weights change goes on
    /// predicting with the old ones.
    pub fn new(model: &'m NewsTagger, batch_windows: usize) -> anyhow::Result<Self> {
        Self::with_precision(model, batch_windows, Precision::F32)
    }

    /// [`Predictor::new`] with the matrix products at `precision` (bf16: CPUs with AVX512-BF16,
    /// an error elsewhere; int8: the CPU only, AMX, VNNI or AVX2 kernels where the CPU has
    /// them, a portable one elsewhere).
    pub fn with_precision(
        model: &'m NewsTagger,
        batch_windows: usize,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        crate::runtime::tune_allocator(crate::runtime::Workload::Inference);
        let prepared = if model.device().is_cpu() || precision != Precision::F32 {
            Some(model.prepare(precision)?)
        } else {
            None
        };
        Ok(Predictor {
            model,
            prepared,
            batch_windows: batch_windows.max(1),
            keep_word_probs: false,
            keep_passages: false,
        })
    }

    /// The predictor, keeping each word's tag distribution in its predictions (for fitting
    /// calibration).
    pub fn keeping_word_probs(mut self) -> Self {
        self.keep_word_probs = true;
        self
    }

    /// The predictor, keeping each passage's hidden state in its predictions (for refitting the
    /// topic head).
    pub fn keeping_passages(mut self) -> Self {
        self.keep_passages = true;
        self
    }

    /// The model it runs.
    pub fn model(&self) -> &'m NewsTagger {
        self.model
    }

    /// Encodes an article into sub-token windows.
    pub fn encode(&self, article: &Article) -> anyhow::Result<EncodedArticle> {
        encode_article(&self.model.tokenizer, article, self.model.window())
    }

    /// Predicts entities and topic probabilities for each article, in order.
    pub fn predict(&self, articles: &[Article]) -> anyhow::Result<Vec<ArticlePrediction>> {
        let encoded = articles
            .iter()
            .map(|a| self.encode(a))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.predict_encoded(articles, &encoded)
    }

    /// As [`Predictor::predict`], for articles already encoded.
    pub fn predict_encoded(
        &self,
        articles: &[Article],
        encoded: &[EncodedArticle],
    ) -> anyhow::Result<Vec<ArticlePrediction>> {
        let model = self.model;
        let n_tags = model.tags.len();
        let hidden = model.config.bert.hidden_size;
        let mut word_probs: Vec<Vec<Vec<f32>>> = articles
            .iter()
            .map(|a| {
                // Words the tokenizer drops get no prediction: certainly outside any entity.
                let mut outside = vec![0.0; n_tags];
                if let Some(o) = model.tags.index(&crate::data::Tag::Outside) {
                    outside[o] = 1.0;
                }
                vec![outside; a.words().len()]
            })
            .collect();
        let mut pooled = ArticleSums::new(encoded, hidden);
        // Units of at most `batch_windows` windows, so one huge article never makes a huge batch
        // (on the CPU, and at most `CPU_BATCH_SLOTS` slots of full windows).
        let (overhead, max_slots) = if model.device().is_cpu() {
            (CPU_BATCH_OVERHEAD_SLOTS, CPU_BATCH_SLOTS)
        } else {
            (DEVICE_BATCH_OVERHEAD_SLOTS, usize::MAX)
        };
        let full_windows = (max_slots / model.window().max_tokens.max(1)).max(1);
        let units = units(encoded, self.batch_windows.min(full_windows));
        let groups = inference_batches(&units, self.batch_windows, max_slots, overhead);
        let run = |group: &Vec<Unit>| -> anyhow::Result<BatchOutput> {
            let batch = Batch::new(encoded, group, model.special, model.device())?;
            let out = model.forward_prepared(&batch, self.prepared.as_ref(), &mut Mode::Infer)?;
            let probs = candle_nn::ops::softmax_last_dim(&out.entity_logits)?.to_vec2::<f32>()?;
            let sums = out.segment_sums.to_vec2::<f32>()?;
            Ok(BatchOutput { batch, probs, sums })
        };
        let mut add = |group: &[Unit], output: BatchOutput| {
            let BatchOutput { batch, probs, sums } = output;
            for ((unit, word), p) in batch.words.iter().zip(probs) {
                word_probs[group[*unit].article][*word] = p;
            }
            pooled.add(group, &batch, sums);
        };
        if model.device().is_cpu() {
            // On the CPU, batches run side by side on the compute pool: one batch's sequential
            // work between kernels (and a small batch's products, too small to split) leaves
            // cores idle that another batch fills. Each batch's result is the same either way
            // (the kernels' reductions do not depend on the thread count), and they are added up
            // in batch order. The results held until then are each word's distribution and the
            // segments' sums, small beside a batch's activations; taking the batches a few per
            // thread at a time instead cost `tag` 7-10% on the CoNLL test sentences.
            let outputs: Vec<_> = groups.par_iter().map(run).collect();
            for (group, output) in groups.iter().zip(outputs) {
                add(group, output?);
            }
        } else {
            for group in &groups {
                add(group, run(group)?);
            }
        }
        let topics =
            topics::read_topics(model, pooled.into_passages(), hidden, self.keep_passages)?;
        let calibration = model.calibration();
        let temperature = calibration.map_or(1.0, |c| c.entity_temperature);

        Ok(articles
            .iter()
            .zip(word_probs)
            .zip(topics)
            .zip(encoded)
            .map(|(((a, probs), topics), enc)| {
                let pieces = Pieces::of(a, enc);
                let path = decode::decode(&probs, &model.tags, &pieces);
                // The entities are decoded at temperature 1; only their scores are tempered.
                let entities = if temperature == 1.0 {
                    decode::scored_entities(&path, &probs, &model.tags, &pieces)
                } else {
                    let scored = tempered(&probs, temperature);
                    decode::scored_entities(&path, &scored, &model.tags, &pieces)
                };
                let topic_probs = if enc.ids.is_empty() {
                    // The tokenizer kept nothing: the all-zero embedding would answer with the
                    // head's biases alone. No topic (and no entity: every word is outside).
                    vec![0.0; topics.logits.len()]
                } else if let Some(c) = calibration {
                    c.topic_probabilities(&topics.logits)
                } else {
                    topics.logits.iter().map(|&z| sigmoid(z)).collect()
                };
                let topic_evidence = topics
                    .evidence
                    .iter()
                    .map(|p| {
                        let words = &enc.passages[(*p)?].words;
                        let w = a.words();
                        Some(w[words.start].start..w[words.end - 1].end)
                    })
                    .collect();
                ArticlePrediction {
                    entities,
                    topic_probs,
                    topic_logits: topics.logits,
                    topic_evidence,
                    word_probs: if self.keep_word_probs {
                        probs
                    } else {
                        Vec::new()
                    },
                    embedding: topics.embedding,
                    passages: topics.passages,
                    tokens: enc.ids.len(),
                    pieces,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tiny::tiny_tagger;

    #[test]
    fn an_article_without_sub_tokens_gets_no_made_up_topics() {
        let model = tiny_tagger(&["oil", "rose"], 3).unwrap();
        // A lone combining accent is a word, but the tokenizer strips accents: nothing is left.
        let articles = [
            Article::from_text("accent", "\u{301}"),
            Article::from_text("text", "oil rose"),
        ];
        assert_eq!(articles[0].words().len(), 1);
        let p = Predictor::new(&model, 4)
            .unwrap()
            .predict(&articles)
            .unwrap();
        assert_eq!(p[0].tokens, 0);
        assert!(p[0].entities.is_empty());
        assert_eq!(p[0].topic_probs, [0.0, 0.0]);
        assert!(p[1].tokens > 0);
        assert!(p[1].topic_probs.iter().all(|&x| x > 0.0 && x < 1.0));
    }
}
