//! Windows into units. A unit is a run of consecutive windows of one article, at most a batch's
//! worth: the piece a batch is made of, in training and in inference alike, so one huge article
//! never makes one huge batch.

use super::subtokens::EncodedArticle;
use std::ops::Range;

/// A run of consecutive windows of one encoded article.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// The article's index among the encoded articles a batch is built from.
    pub article: usize,
    /// Windows `start..end` of the article.
    pub windows: (usize, usize),
    /// Longest window, special tokens included (what batches are bucketed by).
    pub max_len: usize,
}

impl Unit {
    /// Windows `windows` of `encoded`, the article at index `article`.
    pub fn new(article: usize, encoded: &EncodedArticle, windows: (usize, usize)) -> Self {
        let max_len = encoded.windows[windows.0..windows.1]
            .iter()
            .map(|w| w.len())
            .max()
            .unwrap_or(2);
        Unit {
            article,
            windows,
            max_len,
        }
    }

    /// Every window of `encoded`, the article at index `article`, as one unit.
    pub fn whole(article: usize, encoded: &EncodedArticle) -> Self {
        Self::new(article, encoded, (0, encoded.windows.len()))
    }

    pub fn window_count(&self) -> usize {
        self.windows.1 - self.windows.0
    }

    /// Words (indices into the article, `encoded` being this unit's article) whose first
    /// sub-token this unit owns.
    pub fn words(&self, encoded: &EncodedArticle) -> Range<usize> {
        let w = &encoded.windows;
        let owned = w[self.windows.0].owned.start..w[self.windows.1 - 1].owned.end;
        let first = &encoded.first_token;
        // `first_token` increases with the word index (skipping words without tokens).
        let lo = partition(first, |t| t < owned.start);
        let hi = partition(first, |t| t < owned.end);
        lo..hi
    }
}

/// Splits each article's windows into units of at most `max_windows` windows, article by article
/// in order.
pub fn units(encoded: &[EncodedArticle], max_windows: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for (article, enc) in encoded.iter().enumerate() {
        let n = enc.windows.len();
        for start in (0..n).step_by(max_windows.max(1)) {
            out.push(Unit::new(
                article,
                enc,
                (start, (start + max_windows).min(n)),
            ));
        }
    }
    out
}

/// Index of the first word whose first token fails `pred` (words without tokens follow the
/// previous word's answer).
fn partition(first: &[Option<usize>], pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, first.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        // Find a word at or before `mid` that has a token; none means "before everything".
        let t = first[..=mid].iter().rev().find_map(|t| *t);
        if t.is_none_or(&pred) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}
