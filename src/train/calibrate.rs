//! Fitting the score corrections of [`crate::model::calibration`] on dev, the run's last stage.
//!
//! - Entities: the temperature, on a grid, that minimises the log loss of the decoded entities'
//!   span probabilities against "this exact span and type is gold". The entities themselves are
//!   decoded at temperature 1 and do not change.
//! - Topics: Platt scaling per topic on the head's logits, fitted by Newton's method with a pull
//!   towards the head's own probabilities (so a small dev set, which a topic head often separates
//!   perfectly, neither runs the scaling off to infinity nor flattens a head that was right), then
//!   the thresholds chosen again on the calibrated scale.
//!
//! Both are fitted on dev, like the thresholds: dev figures after calibration flatter; `eval` on a
//! held-out split tells.

use crate::data::Article;
use crate::eval::{best_thresholds, Calibration, ReliabilityScorer};
use crate::infer::{decode, Predictor};
use crate::model::calibration::{tempered, Platt, ScoreCalibration};
use crate::model::NewsTagger;

/// Temperatures tried: 0.5 to about 5, in steps of 7%.
fn temperatures() -> impl Iterator<Item = f32> {
    (0..35).map(|i| 0.5 * 1.07f32.powi(i))
}

/// What the fit found, for the run's log: the corrections, and dev's calibration before and after
/// them (after is fitted on the same articles, so it flatters).
#[derive(Debug, Clone)]
pub struct Fitted {
    pub calibration: ScoreCalibration,
    pub before: Calibration,
    pub after: Calibration,
}

/// Log loss of probabilities against outcomes, probabilities kept off 0 and 1.
fn log_loss(pairs: impl Iterator<Item = (f64, bool)>) -> f64 {
    pairs
        .map(|(p, y)| {
            let p = p.clamp(1e-6, 1.0 - 1e-6);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum()
}

/// Fits the corrections on `dev` and sets them (and the re-chosen thresholds) on `model`;
/// `None` when dev has nothing to fit on.
pub fn calibrate(
    model: &mut NewsTagger,
    dev: &[Article],
    batch: usize,
) -> anyhow::Result<Option<Fitted>> {
    model.set_calibration(None);
    let tags = model.tags.clone();
    let predictions = Predictor::new(model, batch)?
        .keeping_word_probs()
        .predict(dev)?;

    // Entities: the decoded path is fixed; only the span probabilities change with temperature.
    let mut cases = Vec::new();
    for (a, p) in dev.iter().zip(&predictions) {
        let Some(gold) = &a.entities else { continue };
        let path = decode::decode(&p.word_probs, &model.tags, &p.pieces);
        let right: Vec<bool> = p
            .entities
            .iter()
            .map(|e| gold.contains(&e.entity))
            .collect();
        if !right.is_empty() {
            cases.push((p, path, right));
        }
    }
    let entities: usize = cases.iter().map(|c| c.2.len()).sum();
    let temperature = if entities == 0 {
        1.0
    } else {
        let loss = |t: f32| {
            log_loss(cases.iter().flat_map(|(p, path, right)| {
                let probs = tempered(&p.word_probs, t);
                decode::scored_entities(path, &probs, &model.tags, &p.pieces)
                    .into_iter()
                    .zip(right.iter().copied())
                    .map(|(e, y)| (f64::from(e.score), y))
                    .collect::<Vec<_>>()
            }))
        };
        temperatures()
            .map(|t| (t, loss(t)))
            .filter(|(_, l)| l.is_finite())
            .fold(
                (1.0, loss(1.0)),
                |best, x| if x.1 < best.1 { x } else { best },
            )
            .0
    };

    let entity_reliability = |t: f32| {
        let mut scorer = ReliabilityScorer::default();
        for (p, path, right) in &cases {
            let probs = tempered(&p.word_probs, t);
            let scored = decode::scored_entities(path, &probs, &tags, &p.pieces);
            for (e, &y) in scored.iter().zip(right) {
                scorer.add(e.score, y);
            }
        }
        scorer.reliability()
    };

    // Topics: one Platt scaling per topic over the dev articles that carry topics.
    let topics = model.topics().to_vec();
    let labelled: Vec<usize> = (0..dev.len())
        .filter(|&i| dev[i].topics.is_some())
        .collect();
    let gold: Vec<Vec<bool>> = labelled
        .iter()
        .map(|&i| {
            let g = dev[i].topics.as_deref().unwrap_or_default();
            topics.iter().map(|t| g.contains(t)).collect()
        })
        .collect();
    let scalings: Vec<Platt> = if topics.is_empty() || labelled.is_empty() {
        Vec::new()
    } else {
        (0..topics.len())
            .map(|j| {
                let z: Vec<f64> = labelled
                    .iter()
                    .map(|&i| f64::from(predictions[i].topic_logits[j]))
                    .collect();
                let y: Vec<bool> = gold.iter().map(|g| g[j]).collect();
                fit_platt(&z, &y)
            })
            .collect()
    };
    if entities == 0 && scalings.is_empty() {
        return Ok(None);
    }
    let calibration = ScoreCalibration {
        entity_temperature: temperature,
        topics: scalings,
    };
    if !calibration.topics.is_empty() {
        let probs: Vec<Vec<f32>> = labelled
            .iter()
            .map(|&i| calibration.topic_probabilities(&predictions[i].topic_logits))
            .collect();
        model.set_thresholds(best_thresholds(&probs, &gold));
    }
    let topic_reliability = |c: Option<&ScoreCalibration>| {
        let mut scorer = ReliabilityScorer::default();
        for (&i, g) in labelled.iter().zip(&gold) {
            let logits = &predictions[i].topic_logits;
            let probs = match c {
                Some(c) => c.topic_probabilities(logits),
                None => predictions[i].topic_probs.clone(),
            };
            for (&p, &y) in probs.iter().zip(g) {
                scorer.add(p, y);
            }
        }
        scorer.reliability()
    };
    let before = Calibration {
        entities: entity_reliability(1.0),
        topics: topic_reliability(None),
    };
    let after = Calibration {
        entities: entity_reliability(temperature),
        topics: topic_reliability(Some(&calibration)),
    };
    model.set_calibration(Some(calibration.clone()));
    Ok(Some(Fitted {
        calibration,
        before,
        after,
    }))
}

/// Weight of the pull towards the head's own probabilities, in examples' worth: a dev set of a few
/// dozen articles moves the scaling only as far as it has evidence for.
const PRIOR_WEIGHT: f64 = 2.0;

/// Platt scaling of logits `z` to outcomes `y`: `sigmoid(a z + b)` minimising the log loss plus
/// `PRIOR_WEIGHT * ((a - 1)^2 + b^2)`, a pull towards the identity (the head's own
/// probabilities), by Newton's method with step halving (at most 100 iterations). A head that dev
/// finds well calibrated, or cannot judge (one class missing), keeps its probabilities; one that is
/// over- or under-confident is scaled. The identity too when the fit would not increase with the
/// logit.
pub fn fit_platt(z: &[f64], y: &[bool]) -> Platt {
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == y.len() || z.iter().any(|v| !v.is_finite()) {
        return Platt::IDENTITY;
    }
    let loss = |a: f64, b: f64| -> f64 {
        let data: f64 = z
            .iter()
            .zip(y)
            .map(|(&zi, &yi)| {
                let f = a * zi + b;
                // log(1 + e^f) - y f, stably
                f.max(0.0) + (-f.abs()).exp().ln_1p() - if yi { f } else { 0.0 }
            })
            .sum();
        data + PRIOR_WEIGHT * ((a - 1.0).powi(2) + b * b)
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = loss(a, b);
    for _ in 0..100 {
        let (mut ga, mut gb) = (2.0 * PRIOR_WEIGHT * (a - 1.0), 2.0 * PRIOR_WEIGHT * b);
        let (mut haa, mut hab, mut hbb) = (2.0 * PRIOR_WEIGHT, 0.0, 2.0 * PRIOR_WEIGHT);
        for (&zi, &yi) in z.iter().zip(y) {
            let p = 1.0 / (1.0 + (-(a * zi + b)).exp());
            let d = p - f64::from(u8::from(yi));
            let w = p * (1.0 - p);
            ga += d * zi;
            gb += d;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if !det.is_finite() || det <= 0.0 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let mut improved = false;
        while step > 1e-8 {
            let (na, nb) = (a - step * da, b - step * db);
            let l = loss(na, nb);
            if l.is_finite() && l < current {
                (a, b, current) = (na, nb, l);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved || (da.abs() + db.abs()) < 1e-9 {
            break;
        }
    }
    if !(a > 0.0 && a.is_finite() && b.is_finite()) {
        return Platt::IDENTITY;
    }
    Platt {
        scale: a as f32,
        shift: b as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_scaling_and_stays_finite_on_separable_data() {
        // Outcomes drawn as sigmoid(0.5 z - 1): the fit lands near (0.5, -1).
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let z: Vec<f64> = (0..4000).map(|_| rng.random_range(-8.0..8.0)).collect();
        let y: Vec<bool> = z
            .iter()
            .map(|&v| rng.random::<f64>() < 1.0 / (1.0 + (-(0.5 * v - 1.0)).exp()))
            .collect();
        let p = fit_platt(&z, &y);
        assert!(
            (p.scale - 0.5).abs() < 0.05 && (p.shift + 1.0).abs() < 0.15,
            "{p:?}"
        );
        // Perfectly separated, saturated logits: dev has no evidence against the head's own
        // confidence, so the scaling stays near the identity and finite.
        let z = [30.0, 25.0, 40.0, -20.0, -35.0, -28.0];
        let y = [true, true, true, false, false, false];
        let p = fit_platt(&z, &y);
        assert!(
            p.scale >= 1.0 && p.scale < 1.5 && p.shift.abs() < 1.0,
            "{p:?}"
        );
        // An over-confident head is softened: at logit 6 (0.998) right 80% of the time, at -6
        // (0.002) wrong 40% of the time.
        let z: Vec<f64> = (0..200)
            .map(|i| if i % 2 == 0 { 6.0 } else { -6.0 })
            .collect();
        let y: Vec<bool> = (0..200).map(|i| (i % 2 == 0) == (i % 10 < 7)).collect();
        let p = fit_platt(&z, &y);
        assert!((p.probability(6.0) - 0.8).abs() < 0.05, "{p:?}");
        assert!((p.probability(-6.0) - 0.4).abs() < 0.05, "{p:?}");
        // One class only: nothing to fit.
        assert_eq!(fit_platt(&[1.0, 2.0], &[true, true]), Platt::IDENTITY);
    }
}
