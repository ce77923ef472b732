//! Helpers for `scripts/check-interop.sh` and `scripts/check-pages.sh`.
//!
//! ```sh
//! # A tiny random base model (2 layers, hidden 32) whose WordPiece vocabulary holds the most
//! # frequent words of the given articles JSONL files (plus letters and digits).
//! cargo run --example interop -- tiny-base OUT_DIR [ARTICLES.jsonl ...]
//! # newstag's raw outputs for each article of an articles JSONL file, one JSON line each:
//! # {"id", "words": [[start, end], ...] (characters), "logits": [[...] per word, null for a word
//! # without sub-tokens], "topic_probs": [...], "passages": [[first word, end word], ...]}
//! # (every window of an article in one batch).
//! cargo run --example interop -- logits MODEL_DIR ARTICLES.jsonl
//! ```

use candle_core::Device;
use newstag::data::jsonl::{read_jsonl, ReadOptions};
use newstag::data::CharOffsets;
use newstag::encode::{encode_article, Batch, Unit};
use newstag::infer::Predictor;
use newstag::model::bert::Mode;
use newstag::model::calibration::sigmoid;
use newstag::model::NewsTagger;
use std::collections::HashMap;
use std::path::Path;

/// How many corpus words the tiny vocabulary takes at most.
const VOCABULARY: usize = 3000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tiny-base") if args.len() >= 2 => tiny_base(Path::new(&args[1]), &args[2..]),
        Some("logits") if args.len() == 3 => logits(Path::new(&args[1]), Path::new(&args[2])),
        _ => anyhow::bail!(
            "usage: interop tiny-base OUT_DIR [ARTICLES.jsonl ...] | interop logits MODEL_DIR ARTICLES.jsonl"
        ),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<newstag::data::Article>> {
    read_jsonl(path, ReadOptions::default())?.into_result()
}

fn tiny_base(out: &Path, corpora: &[String]) -> anyhow::Result<()> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for path in corpora {
        for a in read(Path::new(path))? {
            for i in 0..a.words().len() {
                *counts.entry(a.word(i).to_lowercase()).or_default() += 1;
            }
        }
    }
    let mut words: Vec<(String, usize)> = counts.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let words: Vec<&str> = words
        .iter()
        .take(VOCABULARY)
        .map(|(w, _)| w.as_str())
        .collect();
    std::fs::create_dir_all(out)?;
    newstag::model::tiny::write_tiny_base(out, &words, 7)?;
    eprintln!(
        "tiny base model in {} ({} corpus words in the vocabulary)",
        out.display(),
        words.len()
    );
    Ok(())
}

fn logits(model_dir: &Path, data: &Path) -> anyhow::Result<()> {
    let model = NewsTagger::load(model_dir, &Device::Cpu)?;
    for a in read(data)? {
        let enc = encode_article(&model.tokenizer, &a, model.window())?;
        let unit = Unit::whole(0, &enc);
        let batch = Batch::new(&[enc], &[unit], model.special, model.device())?;
        let out = model.forward(&batch, &mut Mode::Infer)?;
        let rows = out.entity_logits.to_vec2::<f32>()?;
        let mut per_word: Vec<Option<Vec<f32>>> = vec![None; a.words().len()];
        for ((_, word), row) in batch.words.iter().zip(rows) {
            per_word[*word] = Some(row);
        }
        // The topic head's own probabilities (before calibration), pooled as the model pools.
        let topic_probs: Vec<f32> = Predictor::new(&model, 8)?
            .predict(std::slice::from_ref(&a))?
            .remove(0)
            .topic_logits
            .into_iter()
            .map(sigmoid)
            .collect();
        let chars = CharOffsets::new(&a.text);
        let words: Vec<[usize; 2]> = a
            .words()
            .iter()
            .map(|w| [chars.to_char(w.start), chars.to_char(w.end)])
            .collect();
        // Passages as word ranges, for a reference that pools topics as the model does.
        let passages: Vec<[usize; 2]> = newstag::data::passages::passages(&a)
            .into_iter()
            .map(|r| [r.start, r.end])
            .collect();
        println!(
            "{}",
            serde_json::json!({"id": a.id, "words": words, "logits": per_word,
                "topic_probs": topic_probs, "passages": passages})
        );
    }
    Ok(())
}
