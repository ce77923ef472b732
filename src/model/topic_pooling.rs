//! How an article's passages become its topic scores.
//!
//! The topic head scores every passage (sentence, headline); the article's logit for a topic is a
//! smooth maximum of its passages' logits, weighted by their share of the article's sub-tokens:
//!
//! `z = τ · log Σ_p w_p · exp(z_p / τ)`
//!
//! With a large temperature `τ` this is the weighted mean of the passage logits, which for the
//! linear head is the head applied to the article's mean hidden state (the pooling of models made
//! before passages, [`TopicPooling::Mean`]); as `τ` falls it approaches the strongest passage, so
//! one paragraph about a topic in a long article is not diluted by the other fifteen. `τ` is
//! learned per topic when the head is refitted (`src/train/topic_head.rs`).

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The temperature a new model starts from, before the refit learns one per topic.
pub const INITIAL_TEMPERATURE: f32 = 1.0;

/// The pooling of a model's topic head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TopicPooling {
    /// The head applied to the mean hidden state over the whole article (models saved before
    /// passage pooling; `config.json` without `topic_pooling`).
    #[default]
    Mean,
    /// The weighted smooth maximum of the passages' logits, one temperature per topic.
    SmoothMax { temperature: Vec<f32> },
}

impl TopicPooling {
    /// A smooth maximum at the initial temperature for `topics` topics.
    pub fn smooth_max(topics: usize) -> Self {
        TopicPooling::SmoothMax {
            temperature: vec![INITIAL_TEMPERATURE; topics],
        }
    }

    /// Checks the temperatures: one per topic, positive and finite.
    pub fn validate(&self, topics: usize) -> anyhow::Result<()> {
        if let TopicPooling::SmoothMax { temperature } = self {
            anyhow::ensure!(
                temperature.len() == topics,
                "topic_pooling has {} temperatures for {topics} topics",
                temperature.len()
            );
            anyhow::ensure!(
                temperature.iter().all(|t| t.is_finite() && *t > 0.0),
                "topic_pooling temperatures must be positive numbers, not {temperature:?}"
            );
        }
        Ok(())
    }

    /// Whether the head scores passages (and so can say which passage carried a topic).
    pub fn uses_passages(&self) -> bool {
        matches!(self, TopicPooling::SmoothMax { .. })
    }
}

/// `τ · log Σ_p w_p · exp(z_p / τ)` for one topic: `logits[p]` and `weights[p]` (summing to 1) of
/// an article's passages. `None` without passages.
pub fn smooth_max(logits: &[f32], weights: &[f32], temperature: f32) -> Option<f32> {
    let t = f64::from(temperature);
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return None;
    }
    let sum: f64 = logits
        .iter()
        .zip(weights)
        .map(|(&z, &w)| f64::from(w) * ((f64::from(z) - f64::from(m)) / t).exp())
        .sum();
    Some((f64::from(m) + t * sum.ln()) as f32)
}

/// Every topic's [`smooth_max`] over an article's passages: `logits[p]` `[topics]` and
/// `tokens[p]` of each passage, weighted by its share of the sub-tokens; zeros without passages.
pub fn pool_passages(logits: &[&[f32]], tokens: &[usize], temperature: &[f32]) -> Vec<f32> {
    let total = tokens.iter().sum::<usize>().max(1) as f32;
    let weights: Vec<f32> = tokens.iter().map(|&n| n as f32 / total).collect();
    (0..temperature.len())
        .map(|j| {
            let z: Vec<f32> = logits.iter().map(|r| r[j]).collect();
            smooth_max(&z, &weights, temperature[j]).unwrap_or(0.0)
        })
        .collect()
}

/// Groups of passages laid out for [`smooth_max_tensor`]: each group's rows of a `[rows, topics]`
/// logits tensor, padded to the widest group with a zero row, and their log weights. Built once
/// for a batch (or a whole fit) and applied to its logits.
pub struct PassageGroups {
    index: Tensor,
    log_weights: Tensor,
    groups: usize,
    width: usize,
    rows: usize,
}

impl PassageGroups {
    /// `groups[g]`: the (row, sub-tokens) of group `g`'s passages, among `rows` rows.
    pub fn new(
        groups: &[Vec<(u32, usize)>],
        rows: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<Self> {
        let width = groups.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let index: Vec<u32> = groups
            .iter()
            .flat_map(|g| (0..width).map(move |p| g.get(p).map_or(rows as u32, |r| r.0)))
            .collect();
        let tokens: Vec<Vec<usize>> = groups
            .iter()
            .map(|g| g.iter().map(|r| r.1).collect())
            .collect();
        Ok(PassageGroups {
            index: Tensor::from_vec(index, groups.len() * width, device)?,
            log_weights: Tensor::from_vec(
                log_weights(&tokens, width),
                (groups.len(), width, 1),
                device,
            )?,
            groups: groups.len(),
            width,
            rows,
        })
    }

    /// `[groups, topics]`: each group's pooled logits from the passages' `logits`
    /// `[rows, topics]` at `temperature` `[topics]` (differentiable).
    pub fn pool(&self, logits: &Tensor, temperature: &Tensor) -> candle_core::Result<Tensor> {
        let k = logits.dim(1)?;
        debug_assert_eq!(logits.dim(0)?, self.rows);
        let padded = Tensor::cat(
            &[
                logits,
                &Tensor::zeros((1, k), logits.dtype(), logits.device())?,
            ],
            0,
        )?
        .index_select(&self.index, 0)?
        .reshape((self.groups, self.width, k))?;
        smooth_max_tensor(&padded, &self.log_weights, temperature)
    }
}

/// The differentiable twin of [`smooth_max`] for a batch: `logits` `[items, passages, topics]`,
/// `log_weights` `[items, passages, 1]` (padding at a large negative value), `temperature`
/// `[topics]`; returns `[items, topics]`.
pub fn smooth_max_tensor(
    logits: &Tensor,
    log_weights: &Tensor,
    temperature: &Tensor,
) -> candle_core::Result<Tensor> {
    let scaled = logits
        .broadcast_div(temperature)?
        .broadcast_add(log_weights)?;
    // The maximum is a constant shift: the gradient flows through the log-sum-exp alone.
    let m = scaled.max_keepdim(1)?.detach();
    let lse = (scaled.broadcast_sub(&m)?.exp()?.sum_keepdim(1)?.log()? + m)?;
    lse.squeeze(1)?.broadcast_mul(temperature)
}

/// `[items, passages, 1]` log weights for padded passages: each item's passages weighted by their
/// sub-tokens, padding at -1e30 (its exp is 0 next to any real passage).
fn log_weights(tokens: &[Vec<usize>], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(tokens.len() * width);
    for item in tokens {
        let total: usize = item.iter().sum();
        for p in 0..width {
            out.push(match item.get(p) {
                Some(&n) if n > 0 => (n as f32 / total as f32).ln(),
                _ => -1e30,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn temperature_moves_between_mean_and_maximum() {
        let z = [-4.0, 3.0, -2.0];
        let w = [0.5, 0.1, 0.4];
        let mean: f32 = z.iter().zip(&w).map(|(a, b)| a * b).sum();
        assert!((smooth_max(&z, &w, 1e3).unwrap() - mean).abs() < 0.05);
        assert!((smooth_max(&z, &w, 1e-2).unwrap() - 3.0).abs() < 0.05);
        let mid = smooth_max(&z, &w, 1.0).unwrap();
        assert!(mid > mean && mid < 3.0);
        assert_eq!(smooth_max(&[], &[], 1.0), None);
    }

    #[test]
    fn tensor_twin_agrees_and_ignores_padding() {
        let dev = Device::Cpu;
        // Two items: three passages, and one passage plus two of padding; two topics.
        let z = [
            [[1.0f32, -2.0], [0.5, 4.0], [-3.0, 0.0]],
            [[2.0, -1.0], [9.0, 9.0], [9.0, 9.0]],
        ];
        let tokens = vec![vec![10, 5, 5], vec![7]];
        let lw = log_weights(&tokens, 3);
        let t = Tensor::new(&[0.7f32, 2.0], &dev).unwrap();
        let out = smooth_max_tensor(
            &Tensor::new(&z, &dev).unwrap(),
            &Tensor::from_vec(lw, (2, 3, 1), &dev).unwrap(),
            &t,
        )
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
        for (item, row) in out.iter().enumerate() {
            let total: usize = tokens[item].iter().sum();
            let w: Vec<f32> = tokens[item]
                .iter()
                .map(|&n| n as f32 / total as f32)
                .collect();
            for (topic, temp) in [0.7, 2.0].into_iter().enumerate() {
                let zs: Vec<f32> = (0..w.len()).map(|p| z[item][p][topic]).collect();
                let want = smooth_max(&zs, &w, temp).unwrap();
                assert!((row[topic] - want).abs() < 1e-5, "{row:?} vs {want}");
            }
        }
    }
}
