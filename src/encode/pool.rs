//! Windows' evidence into an article's topic input: the one place that decides it, for training
//! and inference alike. Today it is the mean hidden state over the sub-tokens the windows own; the
//! encoder gives each window's sum of those states (`Output::window_sums`), and the mean divides
//! their total by the number of sub-tokens.
//!
//! It comes in two forms because the windows arrive in two ways. In training, a unit's windows
//! are all in one batch and the loss must flow back through the pooling: [`unit_means`] works on
//! tensors. In inference, an article's windows may run in different batches: [`ArticleSums`]
//! gathers their sums on the host and adds them up in window order at the end, so an article's
//! embedding does not depend on how its windows were batched.

use super::subtokens::EncodedArticle;
use super::tensors::Batch;
use super::units::Unit;
use candle_core::Tensor;

/// `[units, hidden]`: each unit's mean hidden state over the sub-tokens it owns, from the
/// batch's window sums `[windows, hidden]` (differentiable).
pub fn unit_means(batch: &Batch, window_sums: &Tensor) -> candle_core::Result<Tensor> {
    let (units, hidden) = (batch.unit_scale.dim(0)?, window_sums.dim(1)?);
    Tensor::zeros((units, hidden), window_sums.dtype(), window_sums.device())?
        .index_add(&batch.row_units, window_sums, 0)?
        .broadcast_mul(&batch.unit_scale)
}

/// Each article's window sums, gathered batch by batch, pooled once every window has run.
pub struct ArticleSums {
    /// Per article, per window: its sum of owned hidden states, once its batch has run.
    windows: Vec<Vec<Option<Vec<f32>>>>,
}

impl ArticleSums {
    /// Room for every window of `encoded`.
    pub fn new(encoded: &[EncodedArticle]) -> Self {
        ArticleSums {
            windows: encoded
                .iter()
                .map(|e| vec![None; e.windows.len()])
                .collect(),
        }
    }

    /// Takes one batch's window sums, rows in the order of its `units`' windows.
    pub fn add(&mut self, units: &[Unit], window_sums: Vec<Vec<f32>>) {
        let mut sums = window_sums.into_iter();
        for u in units {
            for slot in &mut self.windows[u.article][u.windows.0..u.windows.1] {
                *slot = sums.next();
            }
        }
    }

    /// Each article's mean hidden state `[hidden]` over all its sub-tokens (all zeros for an
    /// article without any), `encoded` being the articles given to [`ArticleSums::new`].
    pub fn means(self, encoded: &[EncodedArticle], hidden: usize) -> Vec<Vec<f32>> {
        self.windows
            .into_iter()
            .zip(encoded)
            .map(|(windows, enc)| {
                let mut sum = vec![0f32; hidden];
                for w in windows.iter().flatten() {
                    for (s, v) in sum.iter_mut().zip(w) {
                        *s += v;
                    }
                }
                // Windows own each sub-token exactly once.
                let count = enc.ids.len().max(1) as f32;
                sum.into_iter().map(|v| v / count).collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::subtokens::SpecialTokens;
    use super::super::units::units;
    use super::super::windows::{plan_windows, WindowConfig};
    use super::*;
    use candle_core::Device;

    fn article(n: usize, cfg: WindowConfig) -> EncodedArticle {
        EncodedArticle {
            ids: (10..10 + n as u32).collect(),
            first_token: (0..n).map(Some).collect(),
            windows: plan_windows(n, cfg),
        }
    }

    /// The sub-tokens' "hidden states": token `t` of each article is `[t, 1]`; a window's sum
    /// adds up its owned tokens'.
    fn window_sums(encoded: &[EncodedArticle], units: &[Unit]) -> Vec<Vec<f32>> {
        units
            .iter()
            .flat_map(|u| &encoded[u.article].windows[u.windows.0..u.windows.1])
            .map(|w| vec![w.owned.clone().sum::<usize>() as f32, w.owned.len() as f32])
            .collect()
    }

    #[test]
    fn training_and_inference_pool_the_same_mean() {
        let cfg = WindowConfig {
            max_tokens: 10,
            overlap: 2,
        };
        let encoded = [article(30, cfg), article(5, cfg)];
        // Whole articles, as inference pools them, are one unit each here.
        let whole = units(&encoded, 100);
        assert_eq!(whole.len(), 2);
        let sums = window_sums(&encoded, &whole);
        let special = SpecialTokens {
            cls: 1,
            sep: 2,
            pad: 0,
        };
        let batch = Batch::new(&encoded, &whole, special, &Device::Cpu).unwrap();
        let tensor = Tensor::new(sums.clone(), &Device::Cpu).unwrap();
        let trained = unit_means(&batch, &tensor)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Inference gets the same windows in two batches, in reverse order.
        let mut gathered = ArticleSums::new(&encoded);
        let (first, second) = whole.split_at(1);
        gathered.add(second, window_sums(&encoded, second));
        gathered.add(first, window_sums(&encoded, first));
        let inferred = gathered.means(&encoded, 2);
        for (enc, (t, i)) in encoded.iter().zip(trained.iter().zip(&inferred)) {
            let n = enc.ids.len() as f32;
            let want = [(0..enc.ids.len()).sum::<usize>() as f32 / n, 1.0];
            for ((t, i), w) in t.iter().zip(i).zip(want) {
                assert!((t - w).abs() < 1e-5 && (i - w).abs() < 1e-5, "{t} {i} {w}");
            }
        }
    }
}
