//! Articles as sub-token windows. No article is ever truncated: a long one is cut into overlapping
//! windows, and each sub-token belongs to the one window where it is most central.

use super::config::WindowConfig;
use crate::data::Article;
use std::ops::Range;
use tokenizers::Tokenizer;

/// The special tokens a BERT window needs.
#[derive(Debug, Clone, Copy)]
pub struct SpecialTokens {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
}

impl SpecialTokens {
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> anyhow::Result<Self> {
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| anyhow::anyhow!("tokenizer has no {t} token"))
        };
        Ok(SpecialTokens {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
        })
    }
}

/// An article's sub-tokens and where each word starts among them.
#[derive(Debug, Clone)]
pub struct EncodedArticle {
    pub ids: Vec<u32>,
    /// For each word, the index of its first sub-token (`None` when the tokenizer drops the word).
    pub first_token: Vec<Option<usize>>,
    /// Windows over `ids`, in order.
    pub windows: Vec<Window>,
    /// The article's passages ([`crate::data::passages`]), in order; their sub-tokens are
    /// contiguous and cover `ids`.
    pub passages: Vec<Passage>,
}

/// A passage: its words, and their sub-tokens (empty when the tokenizer drops every word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub words: Range<usize>,
    pub tokens: Range<usize>,
}

/// The passages of word ranges `words`, given each word's first sub-token.
fn passages(
    words: Vec<Range<usize>>,
    first_token: &[Option<usize>],
    n_tokens: usize,
) -> Vec<Passage> {
    let starts: Vec<Option<usize>> = words
        .iter()
        .map(|p| first_token[p.clone()].iter().flatten().next().copied())
        .collect();
    words
        .into_iter()
        .enumerate()
        .map(|(i, words)| {
            let end = starts[i + 1..]
                .iter()
                .flatten()
                .next()
                .copied()
                .unwrap_or(n_tokens);
            let tokens = match starts[i] {
                Some(s) => s..end,
                None => end..end,
            };
            Passage { words, tokens }
        })
        .collect()
}

/// A window: the sub-tokens `tokens` of the article, of which it owns `owned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub tokens: Range<usize>,
    pub owned: Range<usize>,
}

impl Window {
    /// Length with `[CLS]` and `[SEP]`.
    pub fn len(&self) -> usize {
        self.tokens.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Cuts `n` sub-tokens into windows of at most `max_tokens - 2` content tokens overlapping by
/// `overlap`; the last window is aligned to the end so it is full. Ownership changes hands in the
/// middle of each overlap, which makes every token's owner the window where it is most central.
pub fn plan_windows(n: usize, cfg: WindowConfig) -> Vec<Window> {
    let content = cfg.max_tokens - 2;
    if n <= content {
        return vec![Window {
            tokens: 0..n,
            owned: 0..n,
        }];
    }
    let stride = content - cfg.overlap;
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + content < n)
        .collect();
    starts.push(n - content);
    let mut windows = Vec::with_capacity(starts.len());
    let mut owned_from = 0;
    for (i, &s) in starts.iter().enumerate() {
        let end = s + content;
        let owned_to = match starts.get(i + 1) {
            Some(&next) => (next + end).div_ceil(2),
            None => n,
        };
        windows.push(Window {
            tokens: s..end,
            owned: owned_from..owned_to,
        });
        owned_from = owned_to;
    }
    windows
}

/// Tokenises an article word by word (so sub-tokens map back to words) and plans its windows.
pub fn encode_article(
    tokenizer: &Tokenizer,
    article: &Article,
    cfg: WindowConfig,
) -> anyhow::Result<EncodedArticle> {
    let words: Vec<&str> = (0..article.words().len())
        .map(|i| article.word(i))
        .collect();
    let mut ids = Vec::new();
    let mut first_token = Vec::with_capacity(words.len());
    // Encoding in chunks keeps memory bounded on huge articles.
    for chunk in words.chunks(512) {
        let enc = tokenizer
            .encode(chunk.to_vec(), false)
            .map_err(|e| anyhow::anyhow!("article {:?}: tokenizer failed: {e}", article.id))?;
        let base = ids.len();
        let mut seen = vec![None; chunk.len()];
        for (t, w) in enc.get_word_ids().iter().enumerate() {
            if let Some(w) = w {
                let slot = &mut seen[*w as usize];
                if slot.is_none() {
                    *slot = Some(base + t);
                }
            }
        }
        ids.extend_from_slice(enc.get_ids());
        first_token.extend(seen);
    }
    let windows = plan_windows(ids.len(), cfg);
    let passages = passages(
        crate::data::passages::passages(article),
        &first_token,
        ids.len(),
    );
    Ok(EncodedArticle {
        ids,
        first_token,
        windows,
        passages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_articles_get_one_window() {
        let w = plan_windows(
            10,
            WindowConfig {
                max_tokens: 16,
                overlap: 4,
            },
        );
        assert_eq!(
            w,
            [Window {
                tokens: 0..10,
                owned: 0..10
            }]
        );
        assert_eq!(plan_windows(0, WindowConfig::default()).len(), 1);
    }

    #[test]
    fn every_token_is_owned_once_by_its_most_central_window() {
        for n in [15, 27, 100, 1000] {
            let cfg = WindowConfig {
                max_tokens: 16,
                overlap: 6,
            };
            let windows = plan_windows(n, cfg);
            let mut owner = vec![usize::MAX; n];
            for (i, w) in windows.iter().enumerate() {
                assert!(w.tokens.len() == 14 && w.tokens.end <= n);
                assert!(w.tokens.start <= w.owned.start && w.owned.end <= w.tokens.end);
                for t in w.owned.clone() {
                    assert_eq!(owner[t], usize::MAX);
                    owner[t] = i;
                }
            }
            for (t, &o) in owner.iter().enumerate() {
                let dist = |w: &Window| (2 * t + 1).abs_diff(w.tokens.start + w.tokens.end);
                let best = windows
                    .iter()
                    .filter(|w| w.tokens.contains(&t))
                    .map(dist)
                    .min()
                    .unwrap();
                assert!(dist(&windows[o]) <= best + 1, "n={n} token {t}");
            }
        }
    }
}
