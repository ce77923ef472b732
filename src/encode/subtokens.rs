//! Articles into sub-tokens: each article's text is tokenised (in pieces cut at white space) and
//! its sub-tokens mapped to words by the tokenizer's offsets, planned into windows, and its
//! passages located among them.

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
    /// `[PAD]` (BERT, ELECTRA, DistilBERT, DeBERTa-v2) or RoBERTa's `<s>`, `</s>`, `<pad>`
    /// (RoBERTa, XLM-RoBERTa), whichever set the vocabulary holds whole.
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

/// An article's sub-tokens and how its words stand to them.
#[derive(Debug, Clone)]
pub struct EncodedArticle {
    pub ids: Vec<u32>,
    /// For each word, its own first sub-token: the first one that starts in it. `None` when no
    /// sub-token starts in the word: the tokenizer dropped it, or one that starts in an earlier
    /// word covers it (see `joined`).
    pub first_token: Vec<Option<usize>>,
    /// For each word, whether a sub-token that starts in an earlier word covers it (a SentencePiece
    /// piece over `U.S.`, a byte-level token over `'s`): it then takes that word's entity, so no
    /// entity starts or ends inside a token. Missing entries are `false`.
    pub joined: Vec<bool>,
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

/// Words per encoded piece of text: bounds the tokenizer's memory on huge articles.
const CHUNK_WORDS: usize = 512;

/// Tokenises an article's text and plans its windows. Sub-tokens map to words through the
/// tokenizer's own offsets, so what the model reads is what its tokenizer makes of the text (its
/// normaliser, pre-tokenizer and merges), whatever the words are.
pub fn encode_article(
    tokenizer: &Tokenizer,
    article: &Article,
    cfg: WindowConfig,
) -> anyhow::Result<EncodedArticle> {
    let words = article.words();
    let mut ids = Vec::new();
    // Each sub-token's byte range in the text.
    let mut offsets: Vec<Range<usize>> = Vec::new();
    for piece in text_pieces(&article.text, words, CHUNK_WORDS) {
        let enc = tokenizer
            .encode(&article.text[piece.clone()], false)
            .map_err(|e| anyhow::anyhow!("article {:?}: tokenizer failed: {e}", article.id))?;
        ids.extend_from_slice(enc.get_ids());
        offsets.extend(
            enc.get_offsets()
                .iter()
                .map(|&(s, e)| piece.start + s..piece.start + e),
        );
    }
    let (first_token, joined) = align(words, &offsets);
    let windows = plan_windows(ids.len(), cfg);
    let passages = passages(
        crate::data::passages::passages(article),
        &first_token,
        ids.len(),
    );
    Ok(EncodedArticle {
        ids,
        first_token,
        joined,
        windows,
        passages,
    })
}

/// Byte ranges that cover `text`, cut every `chunk_words` words before the space in front of a
/// word, so each piece tokenises as it would inside the whole text: a byte-level or SentencePiece
/// tokenizer sees the space that precedes the word, and one that adds a space to the start of its
/// input finds one there. Without such a space for four chunks, a piece is cut between two words.
fn text_pieces(text: &str, words: &[Range<usize>], chunk_words: usize) -> Vec<Range<usize>> {
    let mut cuts = vec![0];
    let mut since = 0;
    for pair in words.windows(2) {
        since += 1;
        let gap = &text[pair[0].end..pair[1].start];
        if since >= chunk_words && gap.ends_with(' ') {
            cuts.push(pair[1].start - 1);
            since = 0;
        } else if since >= 4 * chunk_words {
            cuts.push(pair[1].start);
            since = 0;
        }
    }
    cuts.push(text.len());
    cuts.windows(2).map(|c| c[0]..c[1]).collect()
}

/// Each word's own first sub-token, and whether a sub-token from an earlier word covers it.
/// A sub-token belongs to the first word it overlaps (an empty one: the word it sits in); one
/// overlapping no word (white space, a stray mark) belongs to none.
fn align(words: &[Range<usize>], offsets: &[Range<usize>]) -> (Vec<Option<usize>>, Vec<bool>) {
    let mut first_token = vec![None; words.len()];
    let mut joined = vec![false; words.len()];
    for (t, off) in offsets.iter().enumerate() {
        // Words that end after the sub-token starts; the first of them may overlap it.
        let w = words.partition_point(|w| w.end <= off.start);
        let overlaps = |x: &&Range<usize>| {
            if off.is_empty() {
                x.start <= off.start
            } else {
                x.start < off.end
            }
        };
        if words.get(w).filter(overlaps).is_none() {
            continue;
        }
        if first_token[w].is_none() && !joined[w] {
            first_token[w] = Some(t);
        }
        // Later words the sub-token reaches into continue word `w`.
        for v in w + 1..words.len() {
            if words[v].start >= off.end {
                break;
            }
            if first_token[v].is_none() {
                joined[v] = true;
            }
        }
    }
    (first_token, joined)
}
