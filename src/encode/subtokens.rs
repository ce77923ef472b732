//! Articles into sub-tokens: each article is tokenised word by word (so every sub-token maps back
//! to its word) and its sub-tokens planned into windows.

use super::windows::{plan_windows, Window, WindowConfig};
use crate::data::Article;
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
    Ok(EncodedArticle {
        ids,
        first_token,
        windows,
    })
}
