//! From per-word tag probabilities to entities: the most probable tag sequence that is valid
//! IOB2 (an `I-X` only after `B-X` or `I-X`, never at a sentence start), so every entity is a run
//! of whole words and strict and lenient scoring agree on it.

use super::marginals::{Marginals, Transitions};
use crate::data::{entities_from_tags, Entity, Tag};
use crate::model::config::TagSet;

/// An entity with its score: the probability of exactly this span and type under the
/// constrained tag distribution ([`super::marginals`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredEntity {
    pub entity: Entity,
    pub score: f32,
}

/// Constrained Viterbi decoding; `probs[w][k]` is word `w`'s probability of tag `k`.
pub fn decode(probs: &[Vec<f32>], tags: &TagSet, sentence_starts: &[usize]) -> Vec<usize> {
    let n = probs.len();
    let k = tags.len();
    if n == 0 {
        return Vec::new();
    }
    let transitions = Transitions::new(tags);
    let logp = |w: usize, t: usize| probs[w][t].max(1e-12).ln();
    let mut score: Vec<f32> = (0..k)
        .map(|t| {
            if transitions.can_start(t) {
                logp(0, t)
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mut back = vec![vec![0usize; k]; n];
    let mut breaks = sentence_starts.iter().peekable();
    for (w, back_w) in back.iter_mut().enumerate().skip(1) {
        while breaks.peek().is_some_and(|&&b| b < w) {
            breaks.next();
        }
        let at_start = breaks.peek().is_some_and(|&&b| b == w);
        let mut next = vec![f32::NEG_INFINITY; k];
        for c in 0..k {
            if at_start && !transitions.can_start(c) {
                continue;
            }
            let (best_p, best) = (0..k)
                .filter(|&p| transitions.ok(at_start, p, c))
                .map(|p| (p, score[p]))
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, x| if x.1 > acc.1 { x } else { acc },
                );
            next[c] = best + logp(w, c);
            back_w[c] = best_p;
        }
        score = next;
    }
    let mut t = (0..k).fold(0, |b, c| if score[c] > score[b] { c } else { b });
    let mut path = vec![0; n];
    for w in (0..n).rev() {
        path[w] = t;
        t = back[w][t];
    }
    path
}

/// Entities of a decoded path, each scored with the probability of its exact span and type.
pub fn scored_entities(
    path: &[usize],
    probs: &[Vec<f32>],
    tags: &TagSet,
    sentence_starts: &[usize],
) -> Vec<ScoredEntity> {
    let seq: Vec<Tag> = path.iter().map(|&t| tags.tags()[t].clone()).collect();
    let entities = entities_from_tags(&seq, sentence_starts);
    if entities.is_empty() {
        return Vec::new();
    }
    let transitions = Transitions::new(tags);
    let marginals = Marginals::new(probs, &transitions, sentence_starts);
    entities
        .into_iter()
        .map(|entity| {
            let b = tags.index(&Tag::Begin(entity.label.clone()));
            let i = tags.index(&Tag::Inside(entity.label.clone()));
            let score = match (b, i) {
                (Some(b), Some(i)) => {
                    marginals.span(entity.words.clone(), b, i, &transitions) as f32
                }
                _ => 0.0,
            };
            ScoredEntity { entity, score }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagset() -> TagSet {
        TagSet::from_types(&["PER", "LOC"]) // O B-PER I-PER B-LOC I-LOC
    }

    #[test]
    fn repairs_an_invalid_argmax() {
        // Argmax would be O I-PER I-PER: invalid start.
        let probs = vec![
            vec![0.9, 0.05, 0.03, 0.01, 0.01],
            vec![0.1, 0.4, 0.45, 0.0, 0.05],
            vec![0.1, 0.1, 0.8, 0.0, 0.0],
        ];
        let path = decode(&probs, &tagset(), &[]);
        assert_eq!(path, [0, 1, 2]);
        let e = scored_entities(&path, &probs, &tagset(), &[]);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].entity.words, 1..3);
        // The span's probability among the valid sequences, not the mean of its tags' (0.6).
        let tr = Transitions::new(&tagset());
        let (mut span, mut z) = (0f64, 0f64);
        for code in 0..125 {
            let t = [code % 5, code / 5 % 5, code / 25];
            if !tr.can_start(t[0]) || !tr.ok(false, t[0], t[1]) || !tr.ok(false, t[1], t[2]) {
                continue;
            }
            let w: f64 = (0..3)
                .map(|i| f64::from(probs[i][t[i]].max(1e-12)))
                .product();
            z += w;
            if t[1] == 1 && t[2] == 2 {
                span += w;
            }
        }
        assert!(
            (f64::from(e[0].score) - span / z).abs() < 1e-6,
            "{}",
            e[0].score
        );
    }

    #[test]
    fn no_entity_crosses_a_sentence_start() {
        let probs = vec![vec![0.0, 0.9, 0.1, 0.0, 0.0], vec![0.0, 0.1, 0.9, 0.0, 0.0]];
        let path = decode(&probs, &tagset(), &[0, 1]);
        assert_eq!(path, [1, 1]);
    }

    #[test]
    fn nan_probabilities_still_decode_to_a_valid_path() {
        let probs = vec![vec![f32::NAN; 5]; 4];
        let path = decode(&probs, &tagset(), &[0, 2]);
        assert_eq!(path.len(), 4);
        // No I- tag at a sentence start, and every I- continues its type.
        let tags = tagset();
        for (w, &t) in path.iter().enumerate() {
            if let Tag::Inside(l) = &tags.tags()[t] {
                assert!(w != 0 && w != 2, "{path:?}");
                assert_eq!(
                    tags.tags()[path[w - 1]].label(),
                    Some(l.as_str()),
                    "{path:?}"
                );
            }
        }
    }
}
