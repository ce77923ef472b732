//! Shared helpers: a tiny synthetic annotated corpus and a tiny random base model.

#![allow(dead_code)]

use candle_core::Device;
use newstag::data::jsonl::parse_jsonl;
use newstag::data::jsonl::ReadOptions;
use newstag::data::Article;
use newstag::model::config::WindowConfig;
use newstag::model::NewsTagger;
use std::path::{Path, PathBuf};

pub const PEOPLE: [&str; 4] = ["Tokayev", "Mirziyoyev", "Japarov", "Rahmon"];
pub const PLACES: [&str; 4] = ["Astana", "Tashkent", "Bishkek", "Dushanbe"];
pub const ORGS: [&str; 3] = ["Gazprom", "Rosatom", "KazMunayGas"];

pub fn vocabulary() -> Vec<&'static str> {
    let mut v = vec![
        "met", "in", "said", "the", "oil", "exports", "rose", "border", "talks", "a", "was", "on",
        "monday", "and", "will", "visit",
    ];
    v.extend(PEOPLE);
    v.extend(PLACES);
    v.extend(ORGS);
    v
}

/// Synthetic articles in JSONL: people meet in places, companies export oil.
pub fn corpus_jsonl(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let (p, l, o) = (PEOPLE[i % 4], PLACES[(i / 2) % 4], ORGS[i % 3]);
        let p2 = PEOPLE[(i + 1) % 4];
        let mut text = String::new();
        let mut ents = Vec::new();
        let mut push = |text: &mut String, s: &str, label: Option<&str>| {
            if !text.is_empty() {
                text.push(' ');
            }
            let start = text.chars().count();
            text.push_str(s);
            if let Some(l) = label {
                ents.push(format!(
                    r#"{{"start": {start}, "end": {}, "label": "{l}"}}"#,
                    start + s.chars().count()
                ));
            }
        };
        for (s, l) in [
            (p, Some("PER")),
            ("met", None),
            (p2, Some("PER")),
            ("in", None),
            (l, Some("LOC")),
            ("on", None),
            ("Monday", None),
            (".", None),
        ] {
            push(&mut text, s, l);
        }
        let topics = if i % 2 == 0 {
            for (s, l) in [
                (o, Some("ORG")),
                ("said", None),
                ("oil", None),
                ("exports", None),
                ("rose", None),
                (".", None),
            ] {
                push(&mut text, s, l);
            }
            r#"["energy"]"#
        } else {
            for (s, l) in [
                ("border", None),
                ("talks", None),
                ("in", None),
                (l, Some("LOC")),
                (".", None),
            ] {
                push(&mut text, s, l);
            }
            r#"["borders"]"#
        };
        out.push_str(&format!(
            r#"{{"id": "doc{i}", "text": "{text}", "entities": [{}], "topics": {topics}}}"#,
            ents.join(", ")
        ));
        out.push('\n');
    }
    out
}

pub fn corpus(n: usize) -> Vec<Article> {
    let out = parse_jsonl(
        Path::new("synthetic.jsonl"),
        corpus_jsonl(n).as_bytes(),
        ReadOptions::default(),
    );
    assert!(out.problems.is_empty(), "{:?}", out.problems);
    out.articles
}

/// Training options for tiny models: `epochs` epochs of 4-window batches at a high learning rate,
/// no checkpoints, no early stop.
pub fn train_options(epochs: usize) -> newstag::train::TrainOptions {
    newstag::train::TrainOptions {
        epochs,
        batch_windows: 4,
        lr: 3e-3,
        checkpoint_every: 0,
        patience: 100,
        ..Default::default()
    }
}

/// Every trainable tensor's values, by name.
pub fn tensor_values(model: &NewsTagger) -> Vec<(String, Vec<f32>)> {
    model
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

/// The names of the tensors in `before` whose values `model` still has.
pub fn unchanged_tensors(before: &[(String, Vec<f32>)], model: &NewsTagger) -> Vec<String> {
    let after: std::collections::HashMap<String, Vec<f32>> =
        tensor_values(model).into_iter().collect();
    before
        .iter()
        .filter(|(name, old)| after.get(name) == Some(old))
        .map(|(name, _)| name.clone())
        .collect()
}

/// A tiny random base model directory.
pub fn tiny_base(dir: &Path) {
    newstag::model::tiny::write_tiny_base(dir, &vocabulary(), 7).unwrap();
}

/// Runs the `newstag` binary with `args`.
pub fn newstag(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_newstag"))
        .args(args)
        .output()
        .unwrap()
}

/// A command's standard error as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A path as text (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A random (untrained) tagger saved as a model directory: PER, ORG, LOC and two topics, small
/// windows so articles span several. Random weights predict entities all over the text.
pub fn random_model(dir: &Path) -> PathBuf {
    let base = dir.join("base");
    tiny_base(&base);
    let window = WindowConfig {
        max_tokens: 16,
        overlap: 4,
    };
    let types = ["PER", "ORG", "LOC"].map(String::from);
    let topics = ["energy", "borders"].map(String::from);
    let model = NewsTagger::from_base(&base, &types, &topics, window, 3, &Device::Cpu).unwrap();
    let out = dir.join("model");
    model.save(&out).unwrap();
    out
}

/// Runs `cmd` with stdin closed, killing it (and failing the test) after `limit`: a regression
/// that spins or waits cannot hang the suite. Output goes through files, so a chatty child never
/// blocks on a full pipe.
pub fn run_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::process::Stdio;
    let logs = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "{cmd:?} still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

/// Runs `newstag` with `args`, failing after `secs` seconds ([`run_within`]).
pub fn newstag_within(secs: u64, args: &[&str]) -> std::process::Output {
    run_within(
        std::process::Command::new(env!("CARGO_BIN_EXE_newstag")).args(args),
        std::time::Duration::from_secs(secs),
    )
}

/// A copy of the model directory `good` at `dir/name`, to break in one way.
pub fn model_variant(good: &Path, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    copy_model(good, &p);
    p
}

/// Copies a model directory's three files.
pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// Edits a model directory's `config.json` in place.
pub fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
}

/// Runs `newstag tag --model MODEL` on a small article and expects it to fail with `expect` in
/// its message, and no panic.
pub fn expect_model_error(model: &Path, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov.").unwrap();
    let out = newstag(&[
        "tag",
        "--model",
        model.to_str().unwrap(),
        txt.to_str().unwrap(),
    ]);
    eprint!("{}", stderr(&out));
    assert!(!out.status.success(), "{} loaded", model.display());
    assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}
