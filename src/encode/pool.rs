//! Windows' evidence into an article's topic input: the one place that gathers it, for training
//! and inference alike. The encoder gives one sum of hidden states per segment (the sub-tokens of
//! one passage that one unit owns, `Output::segment_sums`); from them come each passage's mean
//! state, which the topic head scores (`model::topic_pooling` combines the scores), and the
//! article's mean state.
//!
//! It comes in two forms because the windows arrive in two ways. In training, a unit's windows
//! are all in one batch and the loss must flow back through the pooling: [`unit_means`] and
//! [`segment_means`] work on tensors. In inference, an article's windows may run in different
//! batches: [`ArticleSums`] gathers the segment sums on the host and adds them up per passage in
//! segment order, so an article's states do not depend on how its windows were batched.

use super::subtokens::EncodedArticle;
use super::tensors::Batch;
use super::units::Unit;
use candle_core::Tensor;

/// `[units, hidden]`: each unit's mean hidden state over the sub-tokens it owns, from the
/// batch's segment sums `[segments, hidden]` (differentiable).
pub fn unit_means(batch: &Batch, segment_sums: &Tensor) -> candle_core::Result<Tensor> {
    let (units, hidden) = (batch.unit_scale.dim(0)?, segment_sums.dim(1)?);
    Tensor::zeros((units, hidden), segment_sums.dtype(), segment_sums.device())?
        .index_add(&batch.segment_units, segment_sums, 0)?
        .broadcast_mul(&batch.unit_scale)
}

/// `[segments, hidden]`: each segment's mean hidden state, from the segment sums
/// (differentiable).
pub fn segment_means(batch: &Batch, segment_sums: &Tensor) -> candle_core::Result<Tensor> {
    let scale: Vec<f32> = batch
        .segments
        .iter()
        .map(|s| 1.0 / s.tokens as f32)
        .collect();
    let scale = Tensor::from_vec(scale, (batch.segments.len(), 1), segment_sums.device())?;
    segment_sums.broadcast_mul(&scale.to_dtype(segment_sums.dtype())?)
}

/// One passage's sum of hidden states over its sub-tokens, and their number.
pub type PassageSum = (Vec<f32>, usize);

/// Each article's passage sums, gathered batch by batch.
pub struct ArticleSums {
    /// Per article, per passage.
    passages: Vec<Vec<PassageSum>>,
}

impl ArticleSums {
    /// Room for every passage of `encoded`.
    pub fn new(encoded: &[EncodedArticle], hidden: usize) -> Self {
        ArticleSums {
            passages: encoded
                .iter()
                .map(|e| vec![(vec![0f32; hidden], 0); e.passages.len()])
                .collect(),
        }
    }

    /// Takes one batch's segment sums (rows in the order of `batch.segments`), the batch being
    /// made of `units`.
    pub fn add(&mut self, units: &[Unit], batch: &Batch, segment_sums: Vec<Vec<f32>>) {
        for (seg, sum) in batch.segments.iter().zip(segment_sums) {
            let Some(slot) = self.passages[units[seg.unit].article].get_mut(seg.passage) else {
                continue;
            };
            for (s, v) in slot.0.iter_mut().zip(sum) {
                *s += v;
            }
            slot.1 += seg.tokens;
        }
    }

    /// Each article's passage sums, in passage order.
    pub fn into_passages(self) -> Vec<Vec<PassageSum>> {
        self.passages
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
                let u = &units[s.unit];
                let art = &encoded[u.article];
                let owned_from = art.windows[u.windows.0].owned.start;
                let from = owned_from.max(art.passages[s.passage].tokens.start);
                vec![(from..from + s.tokens).sum::<usize>() as f32, s.tokens as f32]
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
