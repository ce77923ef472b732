//! From per-word tag probabilities to entities: the most probable tag sequence that is valid
//! IOB2 (an `I-X` only after `B-X` or `I-X`, never at a sentence start or a line's first word),
//! so every entity is a run of whole words and strict and lenient scoring agree on it.
//!
//! The sequence runs over the article's pieces ([`Pieces`]), not its words: a word that a sub-token
//! of an earlier word covers shares that word's tag, and a word the tokenizer dropped lies between
//! pieces, inside an entity only when the pieces on both sides are. So an entity never starts or
//! ends inside a sub-token, whatever the tokenizer.

use super::marginals::{Marginals, Transitions};
use crate::data::{entities_from_tags, Article, Entity, Tag};
use crate::encode::EncodedArticle;
use crate::model::config::TagSet;
use std::ops::Range;

/// An entity with its score: the probability of exactly this span and type under the
/// constrained tag distribution ([`super::marginals`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredEntity {
    pub entity: Entity,
    pub score: f32,
}

/// The pieces the model tags: a word with a sub-token of its own, with the words after it that its
/// sub-tokens cover. Words without any sub-token belong to no piece.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pieces {
    /// Each piece's words; the first (the head) carries the piece's prediction.
    words: Vec<Range<usize>>,
    /// Pieces where no entity continues from the piece before (a sentence or a line starts).
    breaks: Vec<usize>,
}

impl Pieces {
    /// The pieces of an article's words, given each word's own first sub-token and whether an
    /// earlier word's sub-token covers it ([`EncodedArticle`]). No entity continues into a piece
    /// that starts at one of `breaks` (word indices where a sentence or a line starts), except
    /// where a sub-token runs across the break (a SentencePiece token over a line break): the
    /// word it reaches joins its piece all the same, since an entity never ends inside a token.
    pub fn new(first_token: &[Option<usize>], joined: &[bool], breaks: &[usize]) -> Self {
        let mut words: Vec<Range<usize>> = Vec::new();
        let mut starts = breaks.iter().peekable();
        let mut starts_here = Vec::new();
        for (w, first) in first_token.iter().enumerate() {
            let mut at_start = false;
            while starts.next_if(|&&s| s <= w).is_some() {
                at_start = true;
            }
            let joins = first.is_none()
                && joined.get(w) == Some(&true)
                && words.last().is_some_and(|last| last.end == w);
            if joins {
                words.last_mut().unwrap().end = w + 1;
                continue;
            }
            // The sentence starts at the next piece: this word's, or (a dropped word) the next.
            if at_start {
                starts_here.push(words.len());
            }
            if first.is_some() {
                words.push(w..w + 1);
            }
        }
        starts_here.dedup();
        starts_here.retain(|&p| p < words.len());
        Pieces {
            words,
            breaks: starts_here,
        }
    }

    /// The pieces of `article` as `encoded` splits it, no entity continuing across a sentence
    /// start or a line break ([`Article::entity_breaks`]).
    pub fn of(article: &Article, encoded: &EncodedArticle) -> Self {
        Self::new(
            &encoded.first_token,
            &encoded.joined,
            &article.entity_breaks(),
        )
    }

    /// Every one of `n` words a piece of its own.
    pub fn words(n: usize, breaks: &[usize]) -> Self {
        Self::new(&vec![Some(0); n], &[], breaks)
    }

    /// The number of pieces.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words of piece `p`.
    pub fn piece_words(&self, p: usize) -> Range<usize> {
        self.words[p].clone()
    }

    /// The words of an entity over pieces `pieces`.
    fn entity_words(&self, pieces: Range<usize>) -> Range<usize> {
        self.words[pieces.start].start..self.words[pieces.end - 1].end
    }

    /// Each piece's tag probabilities: those of its head word.
    fn probs(&self, word_probs: &[Vec<f32>]) -> Vec<Vec<f32>> {
        self.words
            .iter()
            .map(|w| word_probs[w.start].clone())
            .collect()
    }
}

/// Constrained Viterbi decoding of `pieces`, each tagged as its head word: `probs[w][k]` is word
/// `w`'s probability of tag `k`. The path has one tag per piece.
pub fn decode(probs: &[Vec<f32>], tags: &TagSet, pieces: &Pieces) -> Vec<usize> {
    viterbi(&pieces.probs(probs), tags, &pieces.breaks)
}

/// Constrained Viterbi decoding; `probs[w][k]` is item `w`'s probability of tag `k`.
fn viterbi(probs: &[Vec<f32>], tags: &TagSet, breaks: &[usize]) -> Vec<usize> {
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
    let mut breaks = breaks.iter().peekable();
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

/// Entities of a decoded path (one tag per piece), over words, each scored with the probability
/// of its exact span and type.
pub fn scored_entities(
    path: &[usize],
    probs: &[Vec<f32>],
    tags: &TagSet,
    pieces: &Pieces,
) -> Vec<ScoredEntity> {
    let seq: Vec<Tag> = path.iter().map(|&t| tags.tags()[t].clone()).collect();
    let entities = entities_from_tags(&seq, &pieces.breaks);
    if entities.is_empty() {
        return Vec::new();
    }
    let transitions = Transitions::new(tags);
    let probs = pieces.probs(probs);
    let marginals = Marginals::new(&probs, &transitions, &pieces.breaks);
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
            ScoredEntity {
                entity: Entity {
                    words: pieces.entity_words(entity.words),
                    label: entity.label,
                },
                score,
            }
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
        let path = decode(&probs, &tagset(), &Pieces::words(3, &[]));
        assert_eq!(path, [0, 1, 2]);
        let e = scored_entities(&path, &probs, &tagset(), &Pieces::words(3, &[]));
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
    fn joined_words_share_their_piece_and_dropped_words_have_none() {
        // Words: 0 own, 1 joined, 2 dropped, 3 own (a sentence start), 4 joined at a sentence
        // start (word 3's token runs across it: it joins all the same), 5 own.
        let first = [Some(0), None, None, Some(2), None, Some(4)];
        let joined = [false, true, false, false, true, false];
        let p = Pieces::new(&first, &joined, &[0, 3, 4]);
        let words: Vec<_> = (0..p.len()).map(|i| p.piece_words(i)).collect();
        assert_eq!(words, [0..2, 3..5, 5..6]);
        assert_eq!(p.breaks, [0, 1]);
        // B-PER on piece 0, I-PER wanted on piece 1 but a sentence starts there: two entities;
        // the dropped word between them belongs to neither.
        let probs = vec![
            vec![0.0, 1.0, 0.0, 0.0, 0.0],
            vec![0.0; 5],
            vec![0.0; 5],
            vec![0.0, 0.1, 0.9, 0.0, 0.0],
            vec![0.0; 5],
            vec![1.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let path = decode(&probs, &tagset(), &p);
        assert_eq!(path, [1, 1, 0]);
        let e = scored_entities(&path, &probs, &tagset(), &p);
        let spans: Vec<_> = e.iter().map(|e| e.entity.words.clone()).collect();
        assert_eq!(spans, [0..2, 3..5]);
        // Without the sentence starts, the entity runs over the dropped word.
        let p = Pieces::new(&first, &joined, &[]);
        let path = decode(&probs, &tagset(), &p);
        let e = scored_entities(&path, &probs, &tagset(), &p);
        assert_eq!(e[0].entity.words, 0..5);
    }

    #[test]
    fn no_entity_crosses_a_sentence_start() {
        let probs = vec![vec![0.0, 0.9, 0.1, 0.0, 0.0], vec![0.0, 0.1, 0.9, 0.0, 0.0]];
        let path = decode(&probs, &tagset(), &Pieces::words(2, &[0, 1]));
        assert_eq!(path, [1, 1]);
    }

    #[test]
    fn nan_probabilities_still_decode_to_a_valid_path() {
        let probs = vec![vec![f32::NAN; 5]; 4];
        let path = decode(&probs, &tagset(), &Pieces::words(4, &[0, 2]));
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
