//! From per-word tag probabilities to entities: the most probable tag sequence that is valid
//! IOB2 (an `I-X` only after `B-X` or `I-X`, never at a sentence start), so every entity is a run
//! of whole words and strict and lenient scoring agree on it.

use crate::data::{entities_from_tags, Entity, Tag};
use crate::model::config::TagSet;

/// An entity with its score: the mean probability of its words' tags.
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
    // allowed[p][c]: may tag c follow tag p inside a sentence?
    let allowed: Vec<Vec<bool>> = tags
        .tags()
        .iter()
        .map(|p| {
            tags.tags()
                .iter()
                .map(|c| match c {
                    Tag::Inside(l) => p.label() == Some(l.as_str()),
                    _ => true,
                })
                .collect()
        })
        .collect();
    let can_start: Vec<bool> = tags
        .tags()
        .iter()
        .map(|t| !matches!(t, Tag::Inside(_)))
        .collect();
    let logp = |w: usize, t: usize| probs[w][t].max(1e-12).ln();
    let mut score: Vec<f32> = (0..k)
        .map(|t| {
            if can_start[t] {
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
            if at_start && !can_start[c] {
                continue;
            }
            let (best_p, best) = (0..k)
                .filter(|&p| at_start || allowed[p][c])
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

/// Entities of a decoded path, scored.
pub fn scored_entities(
    path: &[usize],
    probs: &[Vec<f32>],
    tags: &TagSet,
    sentence_starts: &[usize],
) -> Vec<ScoredEntity> {
    let seq: Vec<Tag> = path.iter().map(|&t| tags.tags()[t].clone()).collect();
    entities_from_tags(&seq, sentence_starts)
        .into_iter()
        .map(|entity| {
            let sum: f32 = entity.words.clone().map(|w| probs[w][path[w]]).sum();
            let score = sum / entity.words.len() as f32;
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
        assert!((e[0].score - 0.6).abs() < 1e-6);
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
