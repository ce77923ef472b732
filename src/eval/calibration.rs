//! Do the scores mean what they say? Expected calibration error and a reliability table in ten
//! equal-width bins of score, for entities (is a predicted span with its type right?) and for
//! topics (is the topic in the gold labels?).

use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Bins of width 0.1 over [0, 1].
pub const BINS: usize = 10;

/// One bin of a reliability table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Scores in `[low, high)` (the last bin includes 1).
    pub low: f64,
    pub high: f64,
    pub count: usize,
    /// Mean score in the bin (0 when empty).
    pub mean_score: f64,
    /// Fraction of the bin's predictions that were right (0 when empty).
    pub accuracy: f64,
}

/// A reliability table and its expected calibration error: the bins' |accuracy − mean score|,
/// weighted by their share of the predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    pub ece: f64,
    /// Predictions scored (those with a finite score).
    pub count: usize,
    pub bins: Vec<Bin>,
}

/// Calibration of entity scores and topic probabilities; a part is `None` when nothing was scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Every predicted entity of the articles with entity annotations: right when its exact span
    /// and type are gold.
    pub entities: Option<Reliability>,
    /// Every (article, topic) pair the predictions give a probability for, of the articles with
    /// topic annotations: right when the topic is gold.
    pub topics: Option<Reliability>,
}

/// Gathers (score, right) pairs; scores that are not finite (a predictions file without them) are
/// left out.
#[derive(Debug, Default, Clone)]
pub struct ReliabilityScorer {
    pairs: Vec<(f64, bool)>,
}

impl ReliabilityScorer {
    pub fn add(&mut self, score: f32, right: bool) {
        if score.is_finite() {
            self.pairs.push((f64::from(score).clamp(0.0, 1.0), right));
        }
    }

    /// The table, or `None` when no pair was added.
    pub fn reliability(&self) -> Option<Reliability> {
        if self.pairs.is_empty() {
            return None;
        }
        let mut sums = vec![(0usize, 0f64, 0usize); BINS];
        for &(score, right) in &self.pairs {
            let b = ((score * BINS as f64) as usize).min(BINS - 1);
            sums[b].0 += 1;
            sums[b].1 += score;
            sums[b].2 += usize::from(right);
        }
        let total = self.pairs.len() as f64;
        let bins: Vec<Bin> = sums
            .iter()
            .enumerate()
            .map(|(b, &(count, score_sum, right))| {
                let n = count.max(1) as f64;
                Bin {
                    low: b as f64 / BINS as f64,
                    high: (b + 1) as f64 / BINS as f64,
                    count,
                    mean_score: if count > 0 { score_sum / n } else { 0.0 },
                    accuracy: if count > 0 { right as f64 / n } else { 0.0 },
                }
            })
            .collect();
        let ece = bins
            .iter()
            .map(|b| b.count as f64 / total * (b.accuracy - b.mean_score).abs())
            .sum();
        Some(Reliability {
            ece,
            count: self.pairs.len(),
            bins,
        })
    }
}

impl Calibration {
    /// The text block of the report: ECE per part and the non-empty bins.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (name, part) in [("entities", &self.entities), ("topics", &self.topics)] {
            let Some(r) = part else { continue };
            let _ = writeln!(
                out,
                "calibration of {name}: ECE {:.4} over {} prediction(s)",
                r.ece, r.count
            );
            let _ = writeln!(
                out,
                "  {:<9}  {:>7}  {:>10}  {:>8}",
                "score", "count", "mean score", "accuracy"
            );
            for b in r.bins.iter().filter(|b| b.count > 0) {
                let _ = writeln!(
                    out,
                    "  {:.1}-{:.1}    {:>7}  {:>10.4}  {:>8.4}",
                    b.low, b.high, b.count, b.mean_score, b.accuracy
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_is_the_weighted_gap_between_accuracy_and_score() {
        let mut s = ReliabilityScorer::default();
        // Bin 0.9: four at 0.95, three right (accuracy 0.75); bin 0.2: two at 0.25, none right.
        for right in [true, true, true, false] {
            s.add(0.95, right);
        }
        s.add(0.25, false);
        s.add(0.25, false);
        s.add(f32::NAN, true); // no score: not counted
        let r = s.reliability().unwrap();
        assert_eq!(r.count, 6);
        assert_eq!(r.bins.len(), BINS);
        assert_eq!(r.bins[9].count, 4);
        assert!((r.bins[9].accuracy - 0.75).abs() < 1e-12);
        let expect = 4.0 / 6.0 * (0.95 - 0.75) + 2.0 / 6.0 * 0.25;
        assert!((r.ece - expect).abs() < 1e-6, "{}", r.ece);
        // A score of exactly 1 falls in the last bin.
        let mut one = ReliabilityScorer::default();
        one.add(1.0, true);
        let r = one.reliability().unwrap();
        assert_eq!((r.bins[9].count, r.ece), (1, 0.0));
        assert!(ReliabilityScorer::default().reliability().is_none());
    }
}
