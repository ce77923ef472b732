//! Scores that are probabilities: the corrections fitted on dev after training (see
//! `train::calibrate`) and saved in `config.json`, applied at inference.
//!
//! A fine-tuned tagger's softmax is over-confident, and the refitted topic head saturates (most
//! topic scores read 1.00). Two standard corrections with one or two numbers each:
//! - entities: temperature scaling of the word tag distributions (`p^(1/T)`, renormalised) before
//!   span probabilities are computed; the decoded entities themselves do not change;
//! - topics: Platt scaling per topic, `sigmoid(scale * logit + shift)`.

use serde::{Deserialize, Serialize};

/// The corrections of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreCalibration {
    /// Temperature of the word tag distributions (1: none).
    pub entity_temperature: f32,
    /// One per topic, in head order (empty: none).
    pub topics: Vec<Platt>,
}

/// `probability = sigmoid(scale * logit + shift)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub scale: f32,
    pub shift: f32,
}

impl Platt {
    pub const IDENTITY: Platt = Platt {
        scale: 1.0,
        shift: 0.0,
    };

    pub fn probability(&self, logit: f32) -> f32 {
        sigmoid(self.scale * logit + self.shift)
    }
}

pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

impl ScoreCalibration {
    /// Values a saved model may hold.
    pub fn validate(&self, topics: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.entity_temperature.is_finite() && self.entity_temperature > 0.0,
            "calibration.entity_temperature must be a positive number (got {})",
            self.entity_temperature
        );
        anyhow::ensure!(
            self.topics.is_empty() || self.topics.len() == topics,
            "calibration has {} topic scalings for {topics} topics",
            self.topics.len()
        );
        anyhow::ensure!(
            self.topics
                .iter()
                .all(|p| p.scale.is_finite() && p.shift.is_finite()),
            "calibration.topics must hold finite numbers"
        );
        Ok(())
    }

    /// The topic probabilities of an article from its topic logits.
    pub fn topic_probabilities(&self, logits: &[f32]) -> Vec<f32> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &z)| {
                self.topics
                    .get(i)
                    .unwrap_or(&Platt::IDENTITY)
                    .probability(z)
            })
            .collect()
    }
}

/// Word tag distributions at temperature `t`: each row `p^(1/t)`, renormalised (the same as a
/// softmax of the logits divided by `t`).
pub fn tempered(probs: &[Vec<f32>], t: f32) -> Vec<Vec<f32>> {
    let inv = 1.0 / f64::from(t);
    probs
        .iter()
        .map(|row| {
            let raised: Vec<f64> = row
                .iter()
                .map(|&p| f64::from(p.max(0.0)).powf(inv))
                .collect();
            let sum: f64 = raised.iter().sum();
            if sum > 0.0 && sum.is_finite() {
                raised.iter().map(|v| (v / sum) as f32).collect()
            } else {
                row.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tempering_is_a_softmax_of_scaled_logits() {
        let logits = [2.0f32, 0.5, -1.0];
        let softmax = |t: f32| {
            let e: Vec<f32> = logits.iter().map(|z| (z / t).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|v| v / s).collect::<Vec<f32>>()
        };
        let got = tempered(&[softmax(1.0)], 2.5);
        for (a, b) in got[0].iter().zip(softmax(2.5)) {
            assert!((a - b).abs() < 1e-6, "{a} {b}");
        }
        assert_eq!(tempered(&[softmax(1.0)], 1.0)[0].len(), 3);
    }

    #[test]
    fn bad_values_are_refused() {
        let c = ScoreCalibration {
            entity_temperature: 0.0,
            topics: vec![],
        };
        assert!(c.validate(0).is_err());
        let c = ScoreCalibration {
            entity_temperature: 1.0,
            topics: vec![Platt::IDENTITY],
        };
        assert!(c
            .validate(2)
            .unwrap_err()
            .to_string()
            .contains("1 topic scalings for 2"));
        assert_eq!(c.topic_probabilities(&[0.0, 0.0]), [0.5, 0.5]);
    }
}
