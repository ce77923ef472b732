//! Windows' evidence into an article's topic input: the one place that gathers it, for training
//! and inference alike. The encoder gives one sum of hidden states per segment (the sub-tokens of
//! one passage that one window owns, `Output::segment_sums`); from them come each passage's mean
//! state, which the topic head scores (`model::topic_pooling` combines the scores), and the
//! article's mean state.
//!
//! It comes in two forms because the windows arrive in two ways. In training the loss must flow
//! back through the pooling: [`UnitArticles`] works on tensors, a unit's own segments with their
//! gradient and the rest of its article (when it is longer than one unit) as constants. In
//! inference, an article's windows may run in different batches: [`ArticleSums`] keeps the
//! segment sums on the host and adds them up per passage in window order at the end, so an
//! article's states do not depend on how its windows were batched. Both pool the whole article.

use super::subtokens::EncodedArticle;
use super::tensors::Batch;
use super::units::Unit;
use candle_core::Tensor;
use std::collections::BTreeMap;

/// One passage's sum of hidden states over its sub-tokens, and their number.
pub type PassageSum = (Vec<f32>, usize);

/// The passage sums of an article's windows outside one unit, by passage: in training, a unit of
/// a long article is scored with the rest of its article, run without gradient, so its topic loss
/// pools the whole article as inference does.
pub type Outside = BTreeMap<usize, PassageSum>;

/// The whole-article passage states of some of a batch's units, as training pools them.
pub struct UnitArticles {
    /// `[rows, hidden]`: one row per (unit, passage of its article), units in the order given,
    /// passages in article order: the unit's own segment sums (differentiable) plus what lies
    /// outside it (constant).
    pub sums: Tensor,
    /// For each row: the position of its unit among those given, and the passage's sub-tokens.
    pub rows: Vec<(usize, usize)>,
}

impl UnitArticles {
    /// The passages of `units` (indices into the batch's units) from the batch's segment sums
    /// `[segments, hidden]`, each unit's article completed by `outside` (one per unit; empty for
    /// a unit that is its whole article).
    pub fn new(
        batch: &Batch,
        segment_sums: &Tensor,
        units: &[u32],
        outside: &[Outside],
    ) -> candle_core::Result<Self> {
        let (device, dtype, hidden) = (
            segment_sums.device(),
            segment_sums.dtype(),
            segment_sums.dim(1)?,
        );
        // (unit position, passage) → sub-tokens, in unit then passage order.
        let mut passages: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for s in &batch.segments {
            if let Some(k) = units.iter().position(|&u| u as usize == s.unit) {
                *passages.entry((k, s.passage)).or_default() += s.tokens;
            }
        }
        for (k, out) in outside.iter().enumerate() {
            for (&p, (_, tokens)) in out {
                *passages.entry((k, p)).or_default() += tokens;
            }
        }
        let row_of: BTreeMap<(usize, usize), usize> =
            passages.keys().enumerate().map(|(r, &k)| (k, r)).collect();
        let n = row_of.len();
        // Segments of other units go to a spare last row, dropped.
        let segment_rows: Vec<u32> = batch
            .segments
            .iter()
            .map(|s| {
                units
                    .iter()
                    .position(|&u| u as usize == s.unit)
                    .map_or(n, |k| row_of[&(k, s.passage)]) as u32
            })
            .collect();
        let mut constant = vec![0f32; n * hidden];
        for (k, out) in outside.iter().enumerate() {
            for (p, (sum, _)) in out {
                let r = row_of[&(k, *p)];
                constant[r * hidden..(r + 1) * hidden].copy_from_slice(sum);
            }
        }
        let own = Tensor::zeros((n + 1, hidden), dtype, device)?
            .index_add(
                &Tensor::from_vec(segment_rows, batch.segments.len(), device)?,
                segment_sums,
                0,
            )?
            .narrow(0, 0, n)?;
        let constant = Tensor::from_vec(constant, (n, hidden), device)?.to_dtype(dtype)?;
        Ok(UnitArticles {
            sums: (own + constant)?,
            rows: passages.into_iter().map(|((k, _), t)| (k, t)).collect(),
        })
    }

    /// `[rows, hidden]`: each passage's mean state.
    pub fn passage_means(&self) -> candle_core::Result<Tensor> {
        let scale: Vec<f32> = self.rows.iter().map(|r| 1.0 / r.1 as f32).collect();
        let scale = Tensor::from_vec(scale, (self.rows.len(), 1), self.sums.device())?;
        self.sums.broadcast_mul(&scale.to_dtype(self.sums.dtype())?)
    }

    /// `[units, hidden]`: each unit's article mean state over all its sub-tokens.
    pub fn article_means(&self, units: usize) -> candle_core::Result<Tensor> {
        let dev = self.sums.device();
        let mut tokens = vec![0usize; units];
        for &(k, t) in &self.rows {
            tokens[k] += t;
        }
        let scale: Vec<f32> = tokens.iter().map(|&t| 1.0 / t.max(1) as f32).collect();
        let index: Vec<u32> = self.rows.iter().map(|r| r.0 as u32).collect();
        Tensor::zeros((units, self.sums.dim(1)?), self.sums.dtype(), dev)?
            .index_add(
                &Tensor::from_vec(index, self.rows.len(), dev)?,
                &self.sums,
                0,
            )?
            .broadcast_mul(&Tensor::from_vec(scale, (units, 1), dev)?.to_dtype(self.sums.dtype())?)
    }

    /// Each unit's passages as (row, sub-tokens), for [`crate::model::topic_pooling::PassageGroups`].
    pub fn groups(&self, units: usize) -> Vec<Vec<(u32, usize)>> {
        let mut groups = vec![Vec::new(); units];
        for (r, &(k, t)) in self.rows.iter().enumerate() {
            groups[k].push((r as u32, t));
        }
        groups
    }
}

/// Each article's segment sums, gathered batch by batch.
pub struct ArticleSums {
    /// Per article: (passage, window) → the segment's sum and sub-tokens.
    segments: Vec<BTreeMap<(usize, usize), PassageSum>>,
    passages: Vec<usize>,
    hidden: usize,
}

impl ArticleSums {
    /// Room for the segments of `encoded`.
    pub fn new(encoded: &[EncodedArticle], hidden: usize) -> Self {
        ArticleSums {
            segments: vec![BTreeMap::new(); encoded.len()],
            passages: encoded.iter().map(|e| e.passages.len()).collect(),
            hidden,
        }
    }

    /// Takes one batch's segment sums (rows in the order of `batch.segments`), the batch being
    /// made of `units`.
    pub fn add(&mut self, units: &[Unit], batch: &Batch, segment_sums: Vec<Vec<f32>>) {
        for (seg, sum) in batch.segments.iter().zip(segment_sums) {
            self.segments[units[seg.unit].article]
                .insert((seg.passage, seg.window), (sum, seg.tokens));
        }
    }

    /// Each article's passage sums, in passage order, each added up in window order.
    pub fn into_passages(self) -> Vec<Vec<PassageSum>> {
        let hidden = self.hidden;
        self.segments
            .into_iter()
            .zip(self.passages)
            .map(|(segments, n)| {
                let mut out = vec![(vec![0f32; hidden], 0); n];
                for ((p, _), (sum, tokens)) in segments {
                    if let Some(slot) = out.get_mut(p) {
                        for (s, v) in slot.0.iter_mut().zip(sum) {
                            *s += v;
                        }
                        slot.1 += tokens;
                    }
                }
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::subtokens::{Passage, SpecialTokens};
    use super::super::units::units;
    use super::super::windows::{plan_windows, WindowConfig};
    use super::*;
    use candle_core::Device;

    const SPECIAL: SpecialTokens = SpecialTokens {
        cls: 1,
        sep: 2,
        pad: 0,
    };

    /// `n` sub-tokens in windows of 10 overlapping by 2, two passages (a third, the rest).
    fn article(n: usize) -> EncodedArticle {
        let cfg = WindowConfig {
            max_tokens: 10,
            overlap: 2,
        };
        let cut = n / 3;
        EncodedArticle {
            ids: (10..10 + n as u32).collect(),
            first_token: (0..n).map(Some).collect(),
            joined: Vec::new(),
            windows: plan_windows(n, cfg),
            passages: vec![
                Passage {
                    words: 0..cut,
                    tokens: 0..cut,
                },
                Passage {
                    words: cut..n,
                    tokens: cut..n,
                },
            ],
        }
    }

    /// The sub-tokens' "hidden states": token `t` of each article is `[t, 1]`.
    fn segment_sums(encoded: &[EncodedArticle], batch: &Batch, units: &[Unit]) -> Vec<Vec<f32>> {
        batch
            .segments
            .iter()
            .map(|s| {
                let art = &encoded[units[s.unit].article];
                let owned_from = art.windows[s.window].owned.start;
                let from = owned_from.max(art.passages[s.passage].tokens.start);
                vec![
                    (from..from + s.tokens).sum::<usize>() as f32,
                    s.tokens as f32,
                ]
            })
            .collect()
    }

    #[test]
    fn training_and_inference_pool_the_same_states() {
        let encoded = [article(30), article(5)];
        // Whole articles in one batch.
        let whole = units(&encoded, 100);
        let batch = Batch::new(&encoded, &whole, SPECIAL, &Device::Cpu).unwrap();
        let sums = segment_sums(&encoded, &batch, &whole);
        let tensor = Tensor::new(sums.clone(), &Device::Cpu).unwrap();
        let trained =
            UnitArticles::new(&batch, &tensor, &[0, 1], &[Outside::new(), Outside::new()])
                .unwrap()
                .article_means(2)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
        // Inference gets the first article in units of two windows, in several batches.
        let small = units(&encoded, 2);
        let mut gathered = ArticleSums::new(&encoded, 2);
        for u in small.iter().rev() {
            let one = std::slice::from_ref(u);
            let b = Batch::new(&encoded, one, SPECIAL, &Device::Cpu).unwrap();
            gathered.add(one, &b, segment_sums(&encoded, &b, one));
        }
        let passages = gathered.into_passages();
        for (a, enc) in encoded.iter().enumerate() {
            let n = enc.ids.len() as f32;
            let mean = (0..enc.ids.len()).sum::<usize>() as f32 / n;
            assert!((trained[a][0] - mean).abs() < 1e-5);
            for (p, (sum, tokens)) in enc.passages.iter().zip(&passages[a]) {
                assert_eq!(*tokens, p.tokens.len());
                assert_eq!(sum[0], p.tokens.clone().sum::<usize>() as f32);
            }
        }
    }

    #[test]
    fn a_unit_completed_by_the_rest_of_its_article_has_the_whole_articles_passages() {
        let encoded = [article(30)];
        let whole = units(&encoded, 100);
        let batch = Batch::new(&encoded, &whole, SPECIAL, &Device::Cpu).unwrap();
        let sums = Tensor::new(segment_sums(&encoded, &batch, &whole), &Device::Cpu).unwrap();
        let expected = UnitArticles::new(&batch, &sums, &[0], &[Outside::new()]).unwrap();
        let small = units(&encoded, 2);
        assert!(small.len() > 2);
        for (i, u) in small.iter().enumerate() {
            // What the other units hold, as the no-gradient pass would give it.
            let mut outside = Outside::new();
            for other in small
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|x| x.1)
            {
                let one = std::slice::from_ref(other);
                let b = Batch::new(&encoded, one, SPECIAL, &Device::Cpu).unwrap();
                for (seg, sum) in b.segments.iter().zip(segment_sums(&encoded, &b, one)) {
                    let slot = outside.entry(seg.passage).or_insert((vec![0.0; 2], 0));
                    slot.0[0] += sum[0];
                    slot.0[1] += sum[1];
                    slot.1 += seg.tokens;
                }
            }
            let one = std::slice::from_ref(u);
            let b = Batch::new(&encoded, one, SPECIAL, &Device::Cpu).unwrap();
            let sums = Tensor::new(segment_sums(&encoded, &b, one), &Device::Cpu).unwrap();
            let got = UnitArticles::new(&b, &sums, &[0], &[outside]).unwrap();
            assert_eq!(got.rows, expected.rows, "unit {i}");
            assert_eq!(
                got.passage_means().unwrap().to_vec2::<f32>().unwrap(),
                expected.passage_means().unwrap().to_vec2::<f32>().unwrap()
            );
            assert_eq!(got.groups(1), expected.groups(1));
        }
    }
}
