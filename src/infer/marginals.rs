//! The probability of an exact entity span under the constrained tag distribution.
//!
//! The tagger gives each word a distribution over BIO tags; decoding ([`super::decode`]) keeps
//! only tag sequences that are valid IOB2. Normalising the product of the words' probabilities over
//! those valid sequences gives a distribution over sequences, and the probability that words
//! `i..j` form one entity of type X is the mass of the sequences with `B-X` at `i`, `I-X` on
//! `i+1..j` and anything but `I-X` at `j`: forward-backward over the same transitions Viterbi uses.
//! Unlike the mean of the chosen tags' probabilities, this is a probability of the span itself, so
//! a score of 0.8 can mean "right four times in five" (see `eval`'s calibration report).

use crate::data::Tag;
use crate::model::config::TagSet;
use std::ops::Range;

/// Which tag may follow which: inside a sentence an `I-X` only after `B-X` or `I-X`; at a sentence
/// start anything but an `I-` tag.
pub struct Transitions {
    allowed: Vec<Vec<bool>>,
    can_start: Vec<bool>,
}

impl Transitions {
    pub fn new(tags: &TagSet) -> Self {
        let allowed = tags
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
        let can_start = tags
            .tags()
            .iter()
            .map(|t| !matches!(t, Tag::Inside(_)))
            .collect();
        Transitions { allowed, can_start }
    }

    /// May tag `c` follow tag `p`, at a sentence start or inside a sentence?
    pub fn ok(&self, at_start: bool, p: usize, c: usize) -> bool {
        if at_start {
            self.can_start[c]
        } else {
            self.allowed[p][c]
        }
    }

    pub fn can_start(&self, c: usize) -> bool {
        self.can_start[c]
    }
}

/// Forward and backward tables of one article, scaled per word (so long articles do not
/// underflow): `forward[w][t] * backward[w][t]` is the probability that word `w` has tag `t`.
pub struct Marginals<'a> {
    probs: &'a [Vec<f32>],
    starts: Vec<bool>,
    forward: Vec<Vec<f64>>,
    backward: Vec<Vec<f64>>,
    scale: Vec<f64>,
}

/// Probabilities are floored as in Viterbi, so both see the same distribution.
fn emission(p: f32) -> f64 {
    f64::from(p.max(1e-12))
}

impl<'a> Marginals<'a> {
    /// `probs[w][t]`: word `w`'s probability of tag `t`; `sentence_starts`: indices of the words
    /// that open a sentence.
    pub fn new(
        probs: &'a [Vec<f32>],
        transitions: &Transitions,
        sentence_starts: &[usize],
    ) -> Self {
        let n = probs.len();
        let k = probs.first().map_or(0, Vec::len);
        let mut starts = vec![false; n];
        for &s in sentence_starts.iter().filter(|&&s| s < n) {
            starts[s] = true;
        }
        let mut forward = vec![vec![0f64; k]; n];
        let mut scale = vec![1f64; n];
        for w in 0..n {
            for c in 0..k {
                let into = if w == 0 {
                    f64::from(u8::from(transitions.can_start(c)))
                } else {
                    (0..k)
                        .filter(|&p| transitions.ok(starts[w], p, c))
                        .map(|p| forward[w - 1][p])
                        .sum()
                };
                forward[w][c] = into * emission(probs[w][c]);
            }
            let s: f64 = forward[w].iter().sum();
            // Never zero (every word may be O), but guard against NaN scores all the same.
            scale[w] = if s.is_finite() && s > 0.0 { s } else { 1.0 };
            forward[w].iter_mut().for_each(|v| *v /= scale[w]);
        }
        let mut backward = vec![vec![1f64; k]; n];
        for w in (0..n.saturating_sub(1)).rev() {
            for p in 0..k {
                backward[w][p] = (0..k)
                    .filter(|&c| transitions.ok(starts[w + 1], p, c))
                    .map(|c| emission(probs[w + 1][c]) * backward[w + 1][c])
                    .sum::<f64>()
                    / scale[w + 1];
            }
        }
        Marginals {
            probs,
            starts,
            forward,
            backward,
            scale,
        }
    }

    /// The probability that `words` form exactly one entity with begin tag `b` and inside tag
    /// `i` (indices in the tag set), under the given transitions.
    pub fn span(&self, words: Range<usize>, b: usize, i: usize, transitions: &Transitions) -> f64 {
        let (first, end) = (words.start, words.end);
        if first >= end || end > self.probs.len() {
            return 0.0;
        }
        if self.starts[first + 1..end].iter().any(|&s| s) {
            return 0.0; // an entity never crosses a sentence start
        }
        let mut p = self.forward[first][b];
        for w in first + 1..end {
            p *= emission(self.probs[w][i]) / self.scale[w];
        }
        if end < self.probs.len() {
            let last = if end - first == 1 { b } else { i };
            let k = self.probs[end].len();
            let after: f64 = (0..k)
                .filter(|&c| c != i && transitions.ok(self.starts[end], last, c))
                .map(|c| emission(self.probs[end][c]) * self.backward[end][c])
                .sum();
            p *= after / self.scale[end];
        }
        p.clamp(0.0, 1.0)
    }

    /// The probability that word `w` has tag `t`.
    pub fn tag(&self, w: usize, t: usize) -> f64 {
        self.forward[w][t] * self.backward[w][t]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagset() -> TagSet {
        TagSet::from_types(&["PER", "LOC"]) // O B-PER I-PER B-LOC I-LOC
    }

    /// Every valid tag sequence with its unnormalised weight, by enumeration.
    fn sequences(probs: &[Vec<f32>], tr: &Transitions, starts: &[usize]) -> Vec<(Vec<usize>, f64)> {
        let (n, k) = (probs.len(), probs[0].len());
        let mut out = Vec::new();
        for code in 0..k.pow(n as u32) {
            let seq: Vec<usize> = (0..n).map(|w| code / k.pow(w as u32) % k).collect();
            let valid = (0..n).all(|w| {
                if w == 0 {
                    tr.can_start(seq[0])
                } else {
                    tr.ok(starts.contains(&w), seq[w - 1], seq[w])
                }
            });
            if valid {
                let weight = (0..n).map(|w| emission(probs[w][seq[w]])).product();
                out.push((seq, weight));
            }
        }
        out
    }

    fn random_probs(seed: u64, n: usize, k: usize) -> Vec<Vec<f32>> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let raw: Vec<f32> = (0..k).map(|_| rng.random::<f32>().powi(3)).collect();
                let sum: f32 = raw.iter().sum();
                raw.iter().map(|v| v / sum).collect()
            })
            .collect()
    }

    #[test]
    fn span_probabilities_equal_enumeration_over_valid_sequences() {
        let tags = tagset();
        let tr = Transitions::new(&tags);
        for seed in 0..20 {
            let n = 1 + (seed as usize % 5);
            let probs = random_probs(seed, n, tags.len());
            let starts: Vec<usize> = if seed % 3 == 0 {
                vec![0, n / 2]
            } else {
                vec![0]
            };
            let all = sequences(&probs, &tr, &starts);
            let z: f64 = all.iter().map(|(_, w)| w).sum();
            let m = Marginals::new(&probs, &tr, &starts);
            for (b, i) in [(1, 2), (3, 4)] {
                for first in 0..n {
                    for end in first + 1..=n {
                        let exact: f64 = all
                            .iter()
                            .filter(|(s, _)| {
                                s[first] == b
                                    && s[first + 1..end].iter().all(|&t| t == i)
                                    && s.get(end) != Some(&i)
                            })
                            .map(|(_, w)| w)
                            .sum::<f64>()
                            / z;
                        let got = m.span(first..end, b, i, &tr);
                        assert!(
                            (got - exact).abs() < 1e-9,
                            "seed {seed} {first}..{end}: {got} vs {exact}"
                        );
                    }
                }
            }
            for w in 0..n {
                let total: f64 = (0..tags.len()).map(|t| m.tag(w, t)).sum();
                assert!((total - 1.0).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn long_articles_do_not_underflow() {
        let tags = tagset();
        let tr = Transitions::new(&tags);
        let mut probs = vec![vec![0.96, 0.01, 0.01, 0.01, 0.01]; 5000];
        probs[2500] = vec![0.05, 0.9, 0.01, 0.03, 0.01];
        let m = Marginals::new(&probs, &tr, &[0]);
        let p = m.span(2500..2501, 1, 2, &tr);
        assert!(p > 0.5 && p < 1.0, "{p}");
    }
}
