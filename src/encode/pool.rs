//! Windows' evidence into an article's topic input: the one place that gathers it, for training
//! and inference alike. The encoder gives one sum of hidden states per segment (the sub-tokens of
//! one passage that one window owns, `Output::segment_sums`); from them come each passage's mean
//! state, which the topic head scores (`model::topic_pooling` combines the scores), and the
//! article's mean state.
//!
//! It comes in two forms because the windows arrive in two ways. In training, a unit's windows
//! are all in one batch and the loss must flow back through the pooling: [`unit_means`] and
//! [`passage_means`] work on tensors. In inference, an article's windows may run in different
//! batches: [`ArticleSums`] keeps the segment sums on the host and adds them up per passage in
//! window order at the end, so an article's states do not depend on how its windows were batched.

use super::subtokens::EncodedArticle;
use super::tensors::Batch;
use super::units::Unit;
use candle_core::Tensor;
use std::collections::BTreeMap;

/// `[units, hidden]`: each unit's mean hidden state over the sub-tokens it owns, from the
/// batch's segment sums `[segments, hidden]` (differentiable).
pub fn unit_means(batch: &Batch, segment_sums: &Tensor) -> candle_core::Result<Tensor> {
    let (units, hidden) = (batch.unit_scale.dim(0)?, segment_sums.dim(1)?);
    Tensor::zeros((units, hidden), segment_sums.dtype(), segment_sums.device())?
        .index_add(&batch.segment_units, segment_sums, 0)?
        .broadcast_mul(&batch.unit_scale)
}

/// `[unit passages, hidden]`: the mean hidden state of each passage of each unit
/// (`batch.unit_passages`), from the segment sums (differentiable).
pub fn passage_means(batch: &Batch, segment_sums: &Tensor) -> candle_core::Result<Tensor> {
    let n = batch.unit_passages.len();
    let scale: Vec<f32> = batch
        .unit_passages
        .iter()
        .map(|p| 1.0 / p.tokens as f32)
        .collect();
    let scale = Tensor::from_vec(scale, (n, 1), segment_sums.device())?;
    Tensor::zeros(
        (n, segment_sums.dim(1)?),
        segment_sums.dtype(),
        segment_sums.device(),
    )?
    .index_add(&batch.segment_passages, segment_sums, 0)?
    .broadcast_mul(&scale.to_dtype(segment_sums.dtype())?)
}

/// One passage's sum of hidden states over its sub-tokens, and their number.
pub type PassageSum = (Vec<f32>, usize);

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

    fn article(n: usize, cfg: WindowConfig) -> EncodedArticle {
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
        let cfg = WindowConfig {
            max_tokens: 10,
            overlap: 2,
        };
        let encoded = [article(30, cfg), article(5, cfg)];
        let special = SpecialTokens {
            cls: 1,
            sep: 2,
            pad: 0,
        };
        // Whole articles in one batch, as training sees them.
        let whole = units(&encoded, 100);
        let batch = Batch::new(&encoded, &whole, special, &Device::Cpu).unwrap();
        let sums = segment_sums(&encoded, &batch, &whole);
        let tensor = Tensor::new(sums.clone(), &Device::Cpu).unwrap();
        let trained = unit_means(&batch, &tensor)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Inference gets the first article in units of two windows, in several batches.
        let small = units(&encoded, 2);
        let mut gathered = ArticleSums::new(&encoded, 2);
        for u in small.iter().rev() {
            let one = std::slice::from_ref(u);
            let b = Batch::new(&encoded, one, special, &Device::Cpu).unwrap();
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
}
