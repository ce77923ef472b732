//! Articles into sub-tokens: each article is tokenised word by word (so every sub-token maps back
//! to its word), its sub-tokens planned into windows, and its passages located among them.

use super::windows::{plan_windows, Window, WindowConfig};
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
    /// The tokenizer's window-start, window-end and padding tokens: BERT's `[CLS]`, `[SEP]`,
    /// `[PAD]` (BERT, ELECTRA, DistilBERT) or RoBERTa's `<s>`, `</s>`, `<pad>` (RoBERTa,
    /// XLM-RoBERTa), whichever set the vocabulary holds whole.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> anyhow::Result<Self> {
        const SETS: [[&str; 3]; 2] = [["[CLS]", "[SEP]", "[PAD]"], ["<s>", "</s>", "<pad>"]];
        for [cls, sep, pad] in SETS {
            if let (Some(cls), Some(sep), Some(pad)) = (
                tokenizer.token_to_id(cls),
                tokenizer.token_to_id(sep),
                tokenizer.token_to_id(pad),
            ) {
                return Ok(SpecialTokens { cls, sep, pad });
            }
        }
        let missing: Vec<&str> = SETS
            .iter()
            .flatten()
            .copied()
            .filter(|t| tokenizer.token_to_id(t).is_none())
            .collect();
        anyhow::bail!(
            "tokenizer has neither BERT's special tokens [CLS] [SEP] [PAD] nor RoBERTa's <s> </s> <pad> (it lacks {})",
            missing.join(" ")
        )
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
