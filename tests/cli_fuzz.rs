//! The command line under random use: `tag`, `eval`, `train --max-steps 1` and `validate` run
//! with random combinations of paths (the same file twice, links, hard links, directories, missing
//! files, devices, outputs that name inputs) and options, from a seeded generator. Whatever the
//! combination: no panic (exit 101), no hang, and no file the command reads — inputs, gold data,
//! predictions, the model, the base model — is changed.

mod common;

use rand::seq::IndexedRandom;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SEED: u64 = 20261201;
/// Each case is a fresh directory and one run of the binary (tiny model: well under a second).
const CASES: usize = 80;
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// A fresh directory of things a user might name.
fn workspace(d: &Path) {
    common::tiny_base(&d.join("base"));
    common::random_model(d);
    let corpus = common::corpus_jsonl(6);
    std::fs::write(d.join("a.jsonl"), &corpus).unwrap();
    std::fs::write(
        d.join("b.jsonl"),
        corpus.lines().take(3).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();
    std::fs::write(
        d.join("c.conll"),
        "-DOCSTART- O\n\nTokayev B-PER\nmet O\nJaparov B-PER\n\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("inbox")).unwrap();
    std::fs::write(d.join("inbox/one.txt"), "Rahmon will visit Astana.").unwrap();
    std::fs::write(d.join("inbox/two.jsonl"), corpus.lines().next().unwrap()).unwrap();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::os::unix::fs::symlink(d.join("a.jsonl"), d.join("link.jsonl")).unwrap();
    std::os::unix::fs::symlink(d.join("model"), d.join("model-link")).unwrap();
    std::fs::hard_link(d.join("a.jsonl"), d.join("hard.jsonl")).unwrap();
}

const DATA: [&str; 9] = [
    "a.jsonl",
    "b.jsonl",
    "c.conll",
    "link.jsonl",
    "hard.jsonl",
    "missing.jsonl",
    "inbox/two.jsonl",
    "./sub/../a.jsonl",
    "/dev/null",
];
const TAG_INPUTS: [&str; 5] = ["inbox", "empty", "a.jsonl", "inbox/one.txt", "-"];
const MODELS: [&str; 6] = [
    "model",
    "model-link",
    "base",
    "missing",
    "a.jsonl",
    "./model/",
];
const OUTPUTS: [&str; 13] = [
    "a.jsonl",
    "b.jsonl",
    "link.jsonl",
    "hard.jsonl",
    "inbox/new.jsonl",
    "inbox",
    "model/config.json",
    "model",
    "out/new.jsonl",
    "out/page.html",
    "/dev/null",
    "a.jsonl.partial",
    "./sub/../b.jsonl",
];
const RUN_DIRS: [&str; 7] = [
    "runs/new", "base", "model", "inbox", ".", "a.jsonl", "empty",
];

/// One random command line, and the paths it reads.
fn command(rng: &mut StdRng) -> (Vec<String>, Vec<String>) {
    let pick = |rng: &mut StdRng, from: &[&str]| from.choose(rng).unwrap().to_string();
    let some = |rng: &mut StdRng, from: &[&str], most: usize| -> Vec<String> {
        (0..rng.random_range(1..=most))
            .map(|_| pick(rng, from))
            .collect()
    };
    let mut args: Vec<String> = Vec::new();
    let mut reads: Vec<String> = Vec::new();
    let flag = |args: &mut Vec<String>, f: &str, v: String| {
        args.push(f.into());
        args.push(v);
    };
    match rng.random_range(0..4) {
        0 => {
            args.push("tag".into());
            let model = pick(rng, &MODELS);
            flag(&mut args, "--model", model.clone());
            reads.push(model);
            let pool: Vec<&str> = DATA.iter().chain(&TAG_INPUTS).copied().collect();
            let inputs = some(rng, &pool, 3);
            reads.extend(inputs.iter().cloned());
            args.extend(inputs);
            let out = rng.random_bool(0.7).then(|| pick(rng, &OUTPUTS));
            if let Some(out) = &out {
                flag(&mut args, "--out", out.clone());
                if rng.random_bool(0.3) {
                    args.push("--resume".into());
                }
            }
            if rng.random_bool(0.4) {
                flag(&mut args, "--html", pick(rng, &OUTPUTS));
            }
            if rng.random_bool(0.3) {
                flag(&mut args, "--shard", pick(rng, &["0/2", "1/2", "2/2"]));
            }
        }
        1 => {
            args.push("eval".into());
            if rng.random_bool(0.7) {
                let model = pick(rng, &MODELS);
                flag(&mut args, "--model", model.clone());
                reads.push(model);
            } else {
                let preds = pick(rng, &DATA);
                flag(&mut args, "--predictions", preds.clone());
                reads.push(preds);
            }
            for data in some(rng, &DATA, 2) {
                flag(&mut args, "--data", data.clone());
                reads.push(data);
            }
            if rng.random_bool(0.6) {
                flag(&mut args, "--json", pick(rng, &OUTPUTS));
            }
            if rng.random_bool(0.4) {
                flag(&mut args, "--html", pick(rng, &OUTPUTS));
            }
        }
        2 => {
            args.push("train".into());
            let base = pick(rng, &MODELS);
            flag(&mut args, "--base", base.clone());
            reads.push(base);
            for data in some(rng, &DATA, 2) {
                flag(&mut args, "--train", data.clone());
                reads.push(data);
            }
            if rng.random_bool(0.4) {
                let dev = pick(rng, &DATA);
                flag(&mut args, "--dev", dev.clone());
                reads.push(dev);
            }
            flag(&mut args, "--out", pick(rng, &RUN_DIRS));
            for (f, v) in [("--max-steps", "1"), ("--window", "16"), ("--overlap", "4")] {
                flag(&mut args, f, v.into());
            }
            if rng.random_bool(0.3) {
                flag(&mut args, "--lr", pick(rng, &["nan", "1e30", "0", "1e-4"]));
            }
        }
        _ => {
            args.push("validate".into());
            let files = some(rng, &DATA, 3);
            reads.extend(files.iter().cloned());
            args.extend(files);
        }
    }
    if args[0] != "validate" && rng.random_bool(0.3) {
        flag(&mut args, "--batch-size", pick(rng, &["0", "1", "2", "x"]));
    }
    (args, reads)
}

/// Every file under the paths a command reads, with its bytes (links followed).
fn snapshot(root: &Path, reads: &[String]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                for e in std::fs::read_dir(p).unwrap().flatten() {
                    walk(&e.path(), out);
                }
            }
            Ok(m) if m.is_file() => {
                out.insert(p.to_path_buf(), std::fs::read(p).unwrap());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for r in reads
        .iter()
        .filter(|r| r.as_str() != "-" && !r.starts_with("/dev"))
    {
        walk(&root.join(r), &mut out);
    }
    out
}

#[test]
fn random_command_lines_never_panic_hang_or_change_what_they_read() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    for case in 0..CASES {
        let (args, reads) = command(&mut rng);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        workspace(d);
        std::fs::create_dir(d.join("sub")).unwrap();
        let before = snapshot(d, &reads);
        let o = common::run_within(
            Command::new(env!("CARGO_BIN_EXE_newstag"))
                .args(&args)
                .current_dir(d),
            TIME_LIMIT,
        );
        let (status, err) = (o.status, common::stderr(&o));
        let code = status.code().unwrap_or_else(|| {
            panic!("case {case}: {args:?} ended by a signal ({status:?}): {err}")
        });
        assert_ne!(code, 101, "case {case}: {args:?} panicked: {err}");
        assert!(!err.contains("panicked"), "case {case}: {args:?}: {err}");
        let after = snapshot(d, &reads);
        for (path, bytes) in &before {
            assert!(
                after.get(path) == Some(bytes),
                "case {case}: {args:?} changed or removed {}: {err}",
                path.display()
            );
        }
        *codes.entry(code).or_default() += 1;
    }
    // The generator reaches success, refusals and usage errors alike.
    assert!(
        codes.contains_key(&0) && codes.contains_key(&1) && codes.contains_key(&2),
        "{codes:?}"
    );
}
