//! Tiny random models for tests, examples and benchmarks: a small WordPiece tokenizer with the
//! uncased BERT normaliser, and a 2-layer, hidden-32 encoder saved as a base model directory.

use super::bert::Bert;
use super::config::{BertConfig, ModelConfig};
use super::params::{safetensors_bytes, ParamStore};
use crate::fsutil::{write_atomic, write_json_atomic};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::path::Path;
use tokenizers::Tokenizer;

/// A random tagger for unit tests: [`tiny_tokenizer`] over `words`, a tiny BERT, one entity type
/// (`PER`), topics `energy` and `trade`, windows of 12 sub-tokens overlapping by 2 (so a few
/// sentences make several windows), on the CPU.
pub fn tiny_tagger(words: &[&str], seed: u64) -> anyhow::Result<super::NewsTagger> {
    let tokenizer = tiny_tokenizer(words)?;
    let bert = BertConfig::tiny(tokenizer.get_vocab_size(true));
    let window = crate::encode::WindowConfig {
        max_tokens: 12,
        overlap: 2,
    };
    super::NewsTagger::random(
        bert,
        tokenizer,
        &["PER".to_string()],
        &["energy", "trade"].map(String::from),
        window,
        seed,
        &Device::Cpu,
    )
}

/// An uncased WordPiece tokenizer over letters, digits, punctuation and `words`.
pub fn tiny_tokenizer(words: &[&str]) -> anyhow::Result<Tokenizer> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in ('a'..='z').chain('0'..='9') {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    for c in ".,;:!?'\"-()“”‘’«»—".chars() {
        vocab.push(c.to_string());
    }
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, serde_json::json!(i)))
        .collect();
    // The same JSON layout as a Hugging Face BERT tokenizer.json.
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    let tokenizer: Tokenizer = json
        .to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("cannot build tokenizer: {e}"))?;
    Ok(tokenizer)
}

/// Writes a random tiny base model (config.json, model.safetensors, tokenizer.json) into `dir`.
pub fn write_tiny_base(dir: &Path, words: &[&str], seed: u64) -> anyhow::Result<()> {
    let tokenizer = tiny_tokenizer(words)?;
    let bert = BertConfig::tiny(tokenizer.get_vocab_size(true));
    let store = ParamStore::fresh(seed);
    Bert::new(&bert, store.var_builder(&Device::Cpu).pp("bert"))?;
    // Saved as transformers saves a bare BertModel: no `bert.` prefix.
    let tensors: BTreeMap<String, Tensor> = store
        .vars()
        .into_iter()
        .map(|(k, v)| {
            (
                k.trim_start_matches("bert.").to_string(),
                v.as_tensor().clone(),
            )
        })
        .collect();
    write_atomic(
        &dir.join("model.safetensors"),
        &safetensors_bytes(&tensors)?,
    )?;
    let config = ModelConfig {
        bert,
        architectures: vec!["BertModel".into()],
        model_type: "bert".into(),
        id2label: BTreeMap::new(),
        label2id: BTreeMap::new(),
        newstag: None,
    };
    write_json_atomic(&dir.join("config.json"), &config)?;
    let json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("cannot serialise tokenizer: {e}"))?;
    write_atomic(&dir.join("tokenizer.json"), json.as_bytes())
}
