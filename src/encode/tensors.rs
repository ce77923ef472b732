//! Batches of units as tensors. Each unit's words are classified where their windows own them,
//! and its topic input pooled from its passages' sums of owned sub-token states, one sum per
//! (window, passage) segment ([`super::pool`]): a segment never depends on how windows were
//! grouped into units, so inference can add an article's segments in window order.

use super::subtokens::{EncodedArticle, SpecialTokens};
use super::units::Unit;
use candle_core::{Device, Tensor};

/// The sub-tokens of one passage that one window of a batch owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into the batch's units.
    pub unit: usize,
    /// Index into the article's windows.
    pub window: usize,
    /// Index into the article's passages.
    pub passage: usize,
    /// Sub-tokens (at least one).
    pub tokens: usize,
}

/// Tensors for a batch of units.
pub struct Batch {
    /// `[windows, len]` token ids, `[CLS] ... [SEP]` then padding.
    pub ids: Tensor,
    pub type_ids: Tensor,
    /// 1 on tokens, 0 on padding.
    pub mask: Tensor,
    /// Flat positions (`row * len + column`) of the words' first sub-tokens.
    pub word_positions: Tensor,
    /// For each row of `word_positions`: (unit, word index in its article).
    pub words: Vec<(usize, usize)>,
    /// Flat positions of the sub-tokens the windows own, window by window.
    pub owned_positions: Tensor,
    /// For each of `owned_positions`: its segment.
    pub owned_segments: Tensor,
    /// Each segment: the sub-tokens of one passage that one unit owns, in order.
    pub segments: Vec<Segment>,
    /// Sub-tokens that are not padding (special tokens included).
    pub real_tokens: usize,
    /// All slots, padding included.
    pub slots: usize,
}

impl Batch {
    /// The tensors of `units`, whose articles are `encoded`.
    pub fn new(
        encoded: &[EncodedArticle],
        units: &[Unit],
        special: SpecialTokens,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let rows: usize = units.iter().map(Unit::window_count).sum();
        let len = units.iter().map(|u| u.max_len).max().unwrap_or(2);
        let mut ids = vec![special.pad; rows * len];
        let mut mask = vec![0u32; rows * len];
        let (mut owned_positions, mut owned_segments) = (Vec::new(), Vec::new());
        let mut segments: Vec<Segment> = Vec::new();
        let mut word_positions = Vec::new();
        let mut words = Vec::new();
        let mut real_tokens = 0;
        let mut row = 0;
        for (i, unit) in units.iter().enumerate() {
            let art = &encoded[unit.article];
            let mut word_iter = unit.words(art).peekable();
            let mut passage = 0;
            for (wi, w) in art.windows[unit.windows.0..unit.windows.1]
                .iter()
                .enumerate()
            {
                let window = unit.windows.0 + wi;
                let base = row * len;
                ids[base] = special.cls;
                ids[base + 1..base + 1 + w.tokens.len()]
                    .copy_from_slice(&art.ids[w.tokens.clone()]);
                ids[base + 1 + w.tokens.len()] = special.sep;
                mask[base..base + w.len()].fill(1);
                real_tokens += w.len();
                let col = |t: usize| base + 1 + t - w.tokens.start;
                for t in w.owned.clone() {
                    while art.passages.get(passage).is_some_and(|p| p.tokens.end <= t) {
                        passage += 1;
                    }
                    if segments
                        .last()
                        .is_none_or(|s| s.window != window || s.unit != i || s.passage != passage)
                    {
                        segments.push(Segment {
                            unit: i,
                            window,
                            passage,
                            tokens: 0,
                        });
                    }
                    segments.last_mut().unwrap().tokens += 1;
                    owned_positions.push(col(t) as u32);
                    owned_segments.push((segments.len() - 1) as u32);
                }
                while let Some(&word) = word_iter.peek() {
                    match art.first_token[word] {
                        Some(t) if t >= w.owned.end => break,
                        Some(t) => {
                            word_positions.push(col(t) as u32);
                            words.push((i, word));
                        }
                        None => {}
                    }
                    word_iter.next();
                }
                row += 1;
            }
        }
        let n_owned = owned_positions.len();
        Ok(Batch {
            ids: Tensor::from_vec(ids, (rows, len), device)?,
            type_ids: Tensor::zeros((rows, len), candle_core::DType::U32, device)?,
            mask: Tensor::from_vec(mask, (rows, len), device)?,
            word_positions: Tensor::from_vec(word_positions, words.len(), device)?,
            words,
            owned_segments: Tensor::from_vec(owned_segments, n_owned, device)?,
            owned_positions: Tensor::from_vec(owned_positions, n_owned, device)?,
            segments,
            real_tokens,
            slots: rows * len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::subtokens::Passage;
    use super::super::windows::{plan_windows, WindowConfig};
    use super::*;

    #[test]
    fn words_map_to_first_subtokens_in_their_owning_window() {
        // 12 words, word 3 has no tokens, words of 1-2 tokens.
        let mut first_token = Vec::new();
        let mut n = 0;
        for w in 0..12 {
            if w == 3 {
                first_token.push(None);
                continue;
            }
            first_token.push(Some(n));
            n += if w % 2 == 0 { 2 } else { 1 };
        }
        let cfg = WindowConfig {
            max_tokens: 10,
            overlap: 2,
        };
        let art = EncodedArticle {
            ids: (100..100 + n as u32).collect(),
            first_token: first_token.clone(),
            joined: Vec::new(),
            windows: plan_windows(n, cfg),
            passages: vec![
                Passage {
                    words: 0..4,
                    tokens: 0..5,
                },
                Passage {
                    words: 4..12,
                    tokens: 5..n,
                },
            ],
        };
        assert!(art.windows.len() > 1);
        let special = SpecialTokens {
            cls: 1,
            sep: 2,
            pad: 0,
        };
        let unit = Unit::whole(0, &art);
        let batch = Batch::new(std::slice::from_ref(&art), &[unit], special, &Device::Cpu).unwrap();
        let ids = batch.ids.flatten_all().unwrap().to_vec1::<u32>().unwrap();
        let pos = batch.word_positions.to_vec1::<u32>().unwrap();
        let words: Vec<usize> = batch.words.iter().map(|w| w.1).collect();
        assert_eq!(words, (0..12).filter(|&w| w != 3).collect::<Vec<_>>());
        for (p, w) in pos.iter().zip(&words) {
            assert_eq!(ids[*p as usize], 100 + first_token[*w].unwrap() as u32);
        }
        // Every sub-token is owned exactly once, in order, by a window whose row holds it.
        let owned = batch.owned_positions.to_vec1::<u32>().unwrap();
        let owned_ids: Vec<u32> = owned.iter().map(|&p| ids[p as usize]).collect();
        assert_eq!(owned_ids, art.ids);
        let len = batch.ids.dim(1).unwrap() as u32;
        let rows: Vec<u32> = owned.iter().map(|p| p / len).collect();
        assert!(rows.windows(2).all(|r| r[0] <= r[1]));
        // Segments: one per (window, passage); the unit's passages gather them.
        let seg: Vec<(usize, usize, usize)> = batch
            .segments
            .iter()
            .map(|s| (s.window, s.passage, s.tokens))
            .collect();
        let expect: Vec<(usize, usize, usize)> = art
            .windows
            .iter()
            .enumerate()
            .flat_map(|(i, w)| {
                let first = (w.owned.start..w.owned.end.min(5)).len();
                let second = (w.owned.start.max(5)..w.owned.end).len();
                [(i, 0, first), (i, 1, second)]
            })
            .filter(|s| s.2 > 0)
            .collect();
        assert_eq!(seg, expect);
        let passage_tokens = |p: usize| -> usize {
            batch
                .segments
                .iter()
                .filter(|s| s.passage == p)
                .map(|s| s.tokens)
                .sum()
        };
        assert_eq!([passage_tokens(0), passage_tokens(1)], [5, n - 5]);
    }
}
