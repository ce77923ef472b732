//! Reliability of the `newstag` binary: resumable and sharded tagging, training that survives
//! SIGKILL and stops on a non-finite loss, clear messages for bad inputs and hostile model files.
//! Every case here is listed in docs/reliability.md.

mod common;

use candle_core::Device;
use common::{copy_model, edit_config, expect_model_error, newstag, random_model, s, stderr};
use newstag::model::config::WindowConfig;
use newstag::model::NewsTagger;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Inputs of several kinds: two JSONL files, a directory of .txt files with one empty (an error
/// line) and one that is not an input (skipped).
fn tag_inputs(dir: &Path) -> Vec<String> {
    let corpus = common::corpus_jsonl(30);
    let lines: Vec<&str> = corpus.lines().collect();
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    std::fs::write(&a, lines[..17].join("\n") + "\n").unwrap();
    std::fs::write(&b, lines[17..].join("\n") + "\n").unwrap();
    let txt = dir.join("txt");
    std::fs::create_dir_all(&txt).unwrap();
    for (i, text) in [
        "Tokayev met Japarov in Bishkek.",
        "Zürich — «Gazprom» said “oil exports rose”.",
        "",
        "Rahmon will visit Astana on Monday 🚀.",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(txt.join(format!("{i}.txt")), text).unwrap();
    }
    std::fs::write(txt.join("notes.md"), "not an input").unwrap();
    [a, txt, b].iter().map(|p| s(p).to_string()).collect()
}

fn tag(model: &Path, inputs: &[String], extra: &[&str]) -> Output {
    let mut args = vec!["tag", "--model", s(model), "--batch-size", "2"];
    args.extend(extra);
    args.extend(inputs.iter().map(String::as_str));
    newstag(&args)
}

#[test]
fn tag_resume_after_a_torn_write_gives_the_full_run_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let inputs = tag_inputs(d);
    let full = d.join("full.jsonl");
    let out = tag(&model, &inputs, &["--out", s(&full)]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "one empty .txt: {}",
        stderr(&out)
    );
    let full_bytes = std::fs::read(&full).unwrap();
    let n_lines = full_bytes.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(n_lines, 34, "30 JSONL articles and 4 .txt files");

    // Cut points: nothing written, mid-first-line, every line boundary region, mid-last-line.
    let newline_ends: Vec<usize> = full_bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let mut cuts = vec![0, 5, full_bytes.len() - 3];
    for k in [3, 16, 17, 20, 31] {
        cuts.push(newline_ends[k]); // a clean line boundary
        cuts.push(newline_ends[k] + 9); // torn inside the next line
    }
    for cut in cuts {
        let part = d.join(format!("part-{cut}.jsonl"));
        std::fs::write(&part, &full_bytes[..cut]).unwrap();
        let out = tag(&model, &inputs, &["--resume", "--out", s(&part)]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "the empty .txt failed (in this run or a kept line): {}",
            stderr(&out)
        );
        let resumed = std::fs::read(&part).unwrap();
        assert!(
            resumed == full_bytes,
            "cut at byte {cut}: resumed output differs from the full run\n{}",
            stderr(&out)
        );
        let torn = cut > 0 && full_bytes[cut - 1] != b'\n';
        assert_eq!(
            stderr(&out).contains("cut off"),
            torn,
            "cut {cut}: {}",
            stderr(&out)
        );
    }

    // Resuming a complete file tags nothing and changes nothing.
    let out = tag(&model, &inputs, &["--resume", "--out", s(&full)]);
    assert!(
        stderr(&out).contains("tagged 0 article(s)") && stderr(&out).contains("34 already"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&full).unwrap(), full_bytes);

    // Without --resume, --out is written afresh.
    let stale = d.join("stale.jsonl");
    std::fs::write(
        &stale,
        "{\"id\": \"doc0\", \"entities\": [], \"topics\": []}\nold junk",
    )
    .unwrap();
    tag(&model, &inputs, &["--out", s(&stale)]);
    assert_eq!(std::fs::read(&stale).unwrap(), full_bytes);
}

#[test]
fn tag_resume_refuses_damage_in_the_middle_and_needs_out() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let inputs = tag_inputs(d);
    let out_file = d.join("out.jsonl");
    std::fs::write(
        &out_file,
        "{\"id\": \"doc0\"}\nnot json\n{\"id\": \"doc1\"}\n",
    )
    .unwrap();
    let out = tag(&model, &inputs, &["--resume", "--out", s(&out_file)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("out.jsonl:2: not a complete JSON line with an id"),
        "{err}"
    );
    let out = tag(&model, &inputs, &["--resume"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--out"), "{}", stderr(&out));
}

fn line_set(bytes: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> = String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

#[test]
fn shards_together_equal_one_full_run_whatever_the_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let inputs = tag_inputs(d);
    let full = d.join("full.jsonl");
    tag(&model, &inputs, &["--out", s(&full)]);
    let full_lines = line_set(&std::fs::read(&full).unwrap());

    // The same articles spread over other files, in another order.
    let corpus = common::corpus_jsonl(30);
    let mut reordered: Vec<&str> = corpus.lines().collect();
    reordered.reverse();
    let (c, e) = (d.join("c.jsonl"), d.join("e.jsonl"));
    std::fs::write(&c, reordered[..5].join("\n") + "\n").unwrap();
    std::fs::write(&e, reordered[5..].join("\n") + "\n").unwrap();
    let other_inputs = vec![s(&e).to_string(), inputs[1].clone(), s(&c).to_string()];

    let n = 3;
    let mut union = Vec::new();
    for k in 0..n {
        let shard = format!("{k}/{n}");
        let out_k = d.join(format!("shard-{k}.jsonl"));
        let out = tag(&model, &inputs, &["--shard", &shard, "--out", s(&out_k)]);
        assert!(
            stderr(&out).contains(&format!("shard {shard}")),
            "{}",
            stderr(&out)
        );
        let lines = line_set(&std::fs::read(&out_k).unwrap());
        assert!(!lines.is_empty() && lines.len() < full_lines.len());
        // Another order and other file boundaries: the same articles land in the same shard.
        let out_k2 = d.join(format!("shard-{k}-reordered.jsonl"));
        tag(
            &model,
            &other_inputs,
            &["--shard", &shard, "--out", s(&out_k2)],
        );
        assert_eq!(line_set(&std::fs::read(&out_k2).unwrap()), lines);
        union.extend(lines);
    }
    union.sort();
    assert_eq!(union, full_lines, "the shards together are the full run");
}

#[test]
fn bf16_tagging_runs_where_the_cpu_can_and_says_why_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let inputs = tag_inputs(d);
    let (f32_out, bf16_out, bf16_b1) = (
        d.join("f32.jsonl"),
        d.join("bf16.jsonl"),
        d.join("bf16-b1.jsonl"),
    );
    tag(&model, &inputs, &["--out", s(&f32_out)]);
    let out = tag(
        &model,
        &inputs,
        &["--precision", "bf16", "--out", s(&bf16_out)],
    );
    if !newstag::kernels::bf16::supported() {
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains("AVX512-BF16") && err.contains("--precision f32"),
            "{err}"
        );
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let ids = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .collect()
    };
    assert_eq!(ids(&bf16_out), ids(&f32_out), "every article, in order");
    // Batch-invariant in bf16 too.
    let mut args = vec!["tag", "--model", s(&model), "--batch-size", "1"];
    args.extend(["--precision", "bf16", "--out", s(&bf16_b1)]);
    args.extend(inputs.iter().map(String::as_str));
    newstag(&args);
    assert_eq!(
        std::fs::read(&bf16_b1).unwrap(),
        std::fs::read(&bf16_out).unwrap()
    );
}

#[test]
fn an_unknown_precision_is_a_clear_error() {
    let out = newstag(&["tag", "--model", "m", "--precision", "f16", "a.txt"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("expected auto, f32, bf16 or int8"), "{err}");
}

#[test]
fn bad_shard_specs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());
    let txt = dir.path().join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov.").unwrap();
    for (spec, expect) in [
        ("3/3", "K must be below N"),
        ("0/0", "N must be at least 1"),
        ("1", "expected K/N"),
        ("a/4", "is not a whole number"),
    ] {
        let out = newstag(&["tag", "--model", s(&model), "--shard", spec, s(&txt)]);
        assert!(!out.status.success(), "{spec}");
        let err = stderr(&out);
        assert!(
            err.contains("--shard") && err.contains(expect),
            "{spec}: {err}"
        );
    }
}

// ---------------------------------------------------------------- training: kill and resume

fn train_args<'a>(base: &'a str, data: &'a str, run: &'a str, max_steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--base",
        base,
        "--train",
        data,
        "--out",
        run,
        "--seed",
        "11",
        "--epochs",
        "1000",
        "--max-steps",
        max_steps,
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--checkpoint-every",
        "1",
    ]
}

fn latest_step(run: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(run.join("checkpoints/latest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["step"].as_u64().map(|s| s as usize)
}

fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, x) in &a {
        let y = &b[name];
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{name} differs by {worst}");
    }
}

/// `metrics.jsonl` without its timing fields.
fn history(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in ["elapsed_s", "tokens_per_s"] {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

#[test]
fn training_killed_with_sigkill_resumes_to_the_same_weights() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    // 16 articles, 2 per batch: 8 steps an epoch; the budgets below end mid-epoch.
    std::fs::write(&data, common::corpus_jsonl(16)).unwrap();
    let mut killed = None;
    for (attempt, max_steps) in ["37", "75", "150", "301"].into_iter().enumerate() {
        let run = d.join(format!("killed-{attempt}"));
        let kill_at = 5 + 3 * attempt;
        let mut child = Command::new(env!("CARGO_BIN_EXE_newstag"))
            .args(train_args(s(&base), s(&data), s(&run), max_steps))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while latest_step(&run).is_none_or(|st| st < kill_at)
            && child.try_wait().unwrap().is_none()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().ok();
        let status = child.wait().unwrap();
        let step = latest_step(&run).unwrap_or(0);
        if status.signal() == Some(9) && step >= kill_at && step < max_steps.parse().unwrap() {
            killed = Some((run, max_steps, step));
            break;
        }
    }
    let (run, max_steps, step) = killed.expect("never managed to kill a run part way through");
    eprintln!("killed at step {step} of {max_steps}");

    let out = newstag(&["train", "--resume", s(&run)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming from"), "{}", stderr(&out));
    assert_eq!(latest_step(&run), Some(max_steps.parse().unwrap()));

    let reference = d.join("reference");
    let out = newstag(&train_args(s(&base), s(&data), s(&reference), max_steps));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_tensors(
        &run.join("model.safetensors"),
        &reference.join("model.safetensors"),
    );
    // The same evaluations, each once, with the same epoch losses (killed at step {step}).
    let (h_run, h_ref) = (history(&run), history(&reference));
    assert_eq!(h_run.len(), h_ref.len(), "killed at step {step}");
    for (a, b) in h_run.iter().zip(&h_ref) {
        assert_eq!(a["step"], b["step"]);
        assert_eq!(a["epoch"], b["epoch"]);
        let (la, lb) = (a["train_loss"].as_f64(), b["train_loss"].as_f64());
        assert!(
            (la.unwrap() - lb.unwrap()).abs() < 1e-9,
            "killed at step {step}: {a} vs {b}"
        );
        assert_eq!(a["lr"], b["lr"]);
    }
}

#[test]
fn resuming_a_finished_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(8)).unwrap();
    // 4 steps an epoch: 6 ends mid-epoch, 8 on an epoch boundary; then early stopping on dev.
    let cases: [(&str, &[&str]); 3] = [
        ("6", &[]),
        ("8", &[]),
        ("100", &["--dev", s(&data), "--patience", "0"]),
    ];
    for (max_steps, extra) in cases {
        let run = d.join(format!("run-{max_steps}"));
        let mut args = train_args(s(&base), s(&data), s(&run), max_steps);
        args.extend(extra);
        let out = newstag(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let (hist, model, step) = (
            std::fs::read(run.join("metrics.jsonl")).unwrap(),
            std::fs::read(run.join("model.safetensors")).unwrap(),
            latest_step(&run),
        );
        let out = newstag(&["train", "--resume", s(&run)]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            String::from_utf8(std::fs::read(run.join("metrics.jsonl")).unwrap()).unwrap(),
            String::from_utf8(hist).unwrap(),
            "max-steps {max_steps}: no evaluation recorded twice"
        );
        assert!(std::fs::read(run.join("model.safetensors")).unwrap() == model);
        assert_eq!(
            latest_step(&run),
            step,
            "max-steps {max_steps}: no more steps"
        );
    }
}

/// `--lr 1e30` from the first step: its update already makes every forward pass NaN, so nothing
/// is checkpointed (a checkpoint of those weights used to be kept as "the last good" one). A run
/// that goes bad after good checkpoints keeps them: `models::a_bad_last_step_never_overwrites_the_runs_model`.
#[test]
fn a_non_finite_loss_stops_training_and_checkpoints_no_unusable_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(8)).unwrap();
    let run = d.join("run");
    let mut args = train_args(s(&base), s(&data), s(&run), "50");
    let lr = args.iter().position(|a| *a == "1e-3").unwrap();
    args[lr] = "1e30";
    let out = newstag(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "error: the loss became NaN after step 1 (epoch 1): stopping; no checkpoint had been written yet in {}. Try a lower --lr.",
            run.display()
        )),
        "{err}"
    );
    assert_eq!(latest_step(&run), None);
    assert!(!run.join("model.safetensors").exists());
}

// ---------------------------------------------------------------- bad inputs

/// A trained-for-one-step model over PER, ORG, LOC and topics energy, borders (for eval).
fn eval_model(d: &Path) -> PathBuf {
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("train.jsonl");
    std::fs::write(&data, common::corpus_jsonl(4)).unwrap();
    let run = d.join("model");
    let out = newstag(&[
        "train",
        "--base",
        s(&base),
        "--train",
        s(&data),
        "--out",
        s(&run),
        "--max-steps",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    run
}

/// Bad annotated files: `eval` (which checks labels against the model) and `train` both refuse
/// them, naming file and line.
#[test]
fn bad_annotated_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = eval_model(d);
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("cols.conll", b"Paris NNP B-LOC\nis O\n", "cols.conll:2: 2 columns, but line 1 has 3"),
        ("onecol.conll", b"Paris\n", "onecol.conll:1: one column only"),
        ("i.conll", b"Paris I-\n", "i.conll:1: malformed tag \"I-\""),
        ("x.conll", b"Paris O\nTokayev X-PER\n", "x.conll:2: malformed tag \"X-PER\""),
        ("nodocs.conll", b"\n\n", "nodocs.conll: no documents"),
        ("docstart.conll", b"-DOCSTART- -X- O\n\n", "docstart.conll: no documents (1 empty document(s), read 2 lines)"),
        ("utf8.conll", b"Paris B-LOC\nZ\xFCrich B-LOC\n", "utf8.conll:2: invalid UTF-8"),
        ("bad.jsonl", b"{\"id\": \"a\", \"text\": \"Paris\"}\n{oops\n", "bad.jsonl:2: malformed JSON"),
        ("notext.jsonl", b"{\"id\": \"a\"}\n", "notext.jsonl:1: article \"a\": missing \"text\""),
        ("dup.jsonl", b"{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"text\": \"y\"}\n", "dup.jsonl:2: article \"a\": duplicate id (first used on line 1)"),
        ("range.jsonl", br#"{"id": "a", "text": "Paris", "entities": [{"start": 0, "end": 9, "label": "LOC"}]}"#, "range.jsonl:1: article \"a\": entity 0..9 LOC lies outside the text (5 characters)"),
        ("rev.jsonl", br#"{"id": "a", "text": "Paris", "entities": [{"start": 5, "end": 0, "label": "LOC"}]}"#, "rev.jsonl:1: article \"a\": entity 5..0 LOC ends before it starts"),
        ("overlap.jsonl", br#"{"id": "a", "text": "Paris Rome", "entities": [{"start": 0, "end": 10, "label": "LOC"}, {"start": 6, "end": 10, "label": "LOC"}]}"#, "overlap.jsonl:1: article \"a\": entity 6..10 LOC overlaps entity 0..10 LOC"),
        ("zero.jsonl", br#"{"id": "a", "text": "Paris", "entities": [{"start": 2, "end": 2, "label": "LOC"}]}"#, "zero.jsonl:1: article \"a\": entity 2..2 LOC is empty"),
        ("cut.jsonl", br#"{"id": "a", "text": "Kazakhstan", "entities": [{"start": 0, "end": 6, "label": "LOC"}]}"#, "cut.jsonl:1: article \"a\": entity 0..6 LOC (\"Kazakh\") ends inside the word"),
        ("utf8.jsonl", b"{\"id\": \"a\", \"text\": \"Z\xFCrich\"}\n", "utf8.jsonl:1: invalid UTF-8"),
        ("emptytext.jsonl", b"{\"id\": \"a\", \"text\": \" \\n \"}\n", "emptytext.jsonl:1: article \"a\": empty \"text\""),
        ("empty.jsonl", b"", "empty.jsonl: no articles (the file is empty)"),
    ];
    for (name, content, expect) in &cases {
        let path = d.join(name);
        std::fs::write(&path, content).unwrap();
        let out = newstag(&["eval", "--model", s(&model), "--data", s(&path)]);
        assert!(!out.status.success(), "eval accepted {name}");
        assert!(
            stderr(&out).contains(expect),
            "eval {name}: {}",
            stderr(&out)
        );
        let run = d.join(format!("run-{name}"));
        let out = newstag(&[
            "train",
            "--base",
            s(&d.join("base")),
            "--train",
            s(&path),
            "--out",
            s(&run),
        ]);
        assert!(!out.status.success(), "train accepted {name}");
        assert!(
            stderr(&out).contains(expect),
            "train {name}: {}",
            stderr(&out)
        );
    }
}

/// Labels and topics outside the model's sets are refused at eval time, as are sidecars whose
/// document count does not match.
#[test]
fn labels_outside_the_model_and_sidecar_mismatches_are_refused_at_eval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = eval_model(d);
    let conll = d.join("foo.conll");
    std::fs::write(&conll, "Paris B-LOC\nACME B-FOO\n").unwrap();
    let misc = d.join("misc.jsonl");
    std::fs::write(
        &misc,
        r#"{"id": "a", "text": "Paris", "entities": [{"start": 0, "end": 5, "label": "MISC"}]}"#,
    )
    .unwrap();
    let topic = d.join("topic.jsonl");
    std::fs::write(
        &topic,
        r#"{"id": "a", "text": "Paris", "topics": ["sport"]}"#,
    )
    .unwrap();
    for (path, expect) in [
        (
            &conll,
            "foo.conll:2: unknown entity type \"FOO\" (known: PER, ORG, LOC)",
        ),
        (
            &misc,
            "misc.jsonl:1: article \"a\": entity 0..5 MISC: unknown entity type \"MISC\"",
        ),
        (
            &topic,
            "topic.jsonl:1: article \"a\": unknown topic \"sport\" (known: energy, borders)",
        ),
    ] {
        let out = newstag(&["eval", "--model", s(&model), "--data", s(path)]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    }
    let two = d.join("two.conll");
    std::fs::write(
        &two,
        "-DOCSTART- -X- O\n\nParis B-LOC\n\n-DOCSTART- -X- O\n\nRome B-LOC\n",
    )
    .unwrap();
    let sidecar = d.join("two.topics.jsonl");
    std::fs::write(&sidecar, "{\"doc\": 0, \"topics\": [\"energy\"]}\n").unwrap();
    let out = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&two),
        "--topics",
        s(&sidecar),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("two.topics.jsonl: has topics for 1 documents but the CoNLL file has 2"),
        "{}",
        stderr(&out)
    );
}

/// CRLF line ends and a byte-order mark are read, not refused.
#[test]
fn crlf_and_bom_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = eval_model(d);
    let conll = d.join("crlf.conll");
    std::fs::write(
        &conll,
        "\u{feff}-DOCSTART- -X- O\r\n\r\nTokayev B-PER\r\nmet O\r\nJaparov B-PER\r\n\r\n",
    )
    .unwrap();
    let jsonl = d.join("bom.jsonl");
    std::fs::write(
        &jsonl,
        "\u{feff}{\"id\": \"a\", \"text\": \"Tokayev met Japarov\", \"entities\": [{\"start\": 0, \"end\": 7, \"label\": \"PER\"}]}\r\n",
    )
    .unwrap();
    let report = d.join("report.json");
    let out = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&conll),
        "--data",
        s(&jsonl),
        "--json",
        s(&report),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["documents"], 2);
    assert_eq!(r["entities"]["per_type"]["PER"]["support"], 3);
}

#[test]
fn skip_invalid_skips_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = eval_model(d);
    let mut data = common::corpus_jsonl(6);
    data.push_str("{\"id\": \"bad1\", \"text\": \"Kazakhstan\", \"entities\": [{\"start\": 0, \"end\": 6, \"label\": \"LOC\"}]}\n");
    data.push_str("{broken\n");
    let path = d.join("mixed.jsonl");
    std::fs::write(&path, data).unwrap();
    let report = d.join("report.json");
    let out = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&path),
        "--skip-invalid",
        "--json",
        s(&report),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("skipped 2 invalid record(s) (--skip-invalid); first: ")
            && err.contains("mixed.jsonl:7"),
        "{err}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["documents"], 6);
    let run = d.join("run");
    let out = newstag(&[
        "train",
        "--base",
        s(&d.join("base")),
        "--train",
        s(&path),
        "--out",
        s(&run),
        "--max-steps",
        "1",
        "--skip-invalid",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("skipped 2 invalid record(s)") && err.contains("training on 6 articles"),
        "{err}"
    );
}

// ---------------------------------------------------------------- model directories

#[test]
fn broken_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = random_model(d);
    let variant = |name: &str| common::model_variant(&good, d, name);

    let m = variant("no-tokenizer");
    std::fs::remove_file(m.join("tokenizer.json")).unwrap();
    expect_model_error(&m, "not a model directory: tokenizer.json is missing");

    // Only safetensors is ever loaded: a pickle checkpoint is not a substitute.
    let m = variant("pickle-only");
    std::fs::rename(m.join("model.safetensors"), m.join("pytorch_model.bin")).unwrap();
    expect_model_error(&m, "not a model directory: model.safetensors is missing");

    let m = variant("bad-config");
    std::fs::write(m.join("config.json"), "{\"hidden_size\": ").unwrap();
    expect_model_error(&m, "config.json: invalid model config");

    let m = variant("more-labels");
    edit_config(&m, |c| {
        c["id2label"]["7"] = "B-MISC".into();
        c["id2label"]["8"] = "I-MISC".into();
    });
    expect_model_error(
        &m,
        "model.safetensors: tensor \"classifier.weight\" has shape [7, 32] in the checkpoint but the config implies [9, 32]",
    );

    let m = variant("more-topics");
    edit_config(&m, |c| {
        c["newstag"]["topics"] = serde_json::json!(["energy", "borders", "trade"]);
        c["newstag"]["thresholds"] = serde_json::json!([0.5, 0.5, 0.5]);
    });
    expect_model_error(&m, "\"topic_classifier.weight\" has shape [2, 32]");

    let m = variant("hidden-size");
    edit_config(&m, |c| c["hidden_size"] = 64.into());
    expect_model_error(&m, "in the checkpoint but the config implies");

    let m = variant("zero-heads");
    edit_config(&m, |c| {
        c["hidden_size"] = 0.into();
        c["num_attention_heads"] = 0.into();
    });
    expect_model_error(&m, "num_attention_heads and vocab_size must be positive");

    let m = variant("truncated");
    let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    std::fs::write(m.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_model_error(&m, "model.safetensors: not a valid safetensors file");

    let m = variant("garbage");
    std::fs::write(m.join("model.safetensors"), vec![0xA5u8; 4096]).unwrap();
    expect_model_error(&m, "model.safetensors: not a valid safetensors file");

    let m = variant("empty-weights");
    std::fs::write(m.join("model.safetensors"), b"").unwrap();
    expect_model_error(&m, "model.safetensors: not a valid safetensors file");

    // A tokenizer with more tokens than the model has embeddings.
    let m = variant("big-tokenizer");
    let mut words: Vec<String> = common::vocabulary().iter().map(|w| w.to_string()).collect();
    words.extend((0..50).map(|i| format!("extra{i}")));
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let tok = newstag::model::tiny::tiny_tokenizer(&refs).unwrap();
    tok.save(m.join("tokenizer.json"), false).unwrap();
    expect_model_error(&m, "but the model's vocabulary has");

    let m = variant("bad-tokenizer");
    std::fs::write(m.join("tokenizer.json"), "{}").unwrap();
    expect_model_error(&m, "tokenizer.json: cannot load tokenizer");
}

/// Hostile safetensors headers are refused before anything is allocated.
#[test]
fn hostile_safetensors_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = random_model(d);
    let headers: [&[u8]; 4] = [
        // A huge tensor whose data would lie far past the end of the file.
        br#"{"bert.embeddings.word_embeddings.weight":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,40000000000]}}"#,
        // Shape and offsets that disagree.
        br#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#,
        // Offsets past the end of a small file.
        br#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
        // Not JSON at all.
        b"\xff\xfe{{{{",
    ];
    for (i, header) in headers.iter().enumerate() {
        let m = d.join(format!("hostile-{i}"));
        copy_model(&good, &m);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 16]);
        std::fs::write(m.join("model.safetensors"), &bytes).unwrap();
        expect_model_error(&m, "model.safetensors: not a valid safetensors file");
    }
    // A header length far larger than the file.
    let m = d.join("hostile-length");
    copy_model(&good, &m);
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(m.join("model.safetensors"), &bytes).unwrap();
    expect_model_error(&m, "model.safetensors: not a valid safetensors file");
}

// ---------------------------------------------------------------- tag inputs

#[test]
fn awkward_tag_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);

    // An empty .txt is an error line (exit 2); an empty JSONL alone is no input at all.
    let empty_txt = d.join("empty.txt");
    std::fs::write(&empty_txt, "").unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&empty_txt)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("error: {}: empty article", s(&empty_txt))),
        "{}",
        stderr(&out)
    );
    let empty_jsonl = d.join("empty.jsonl");
    std::fs::write(&empty_jsonl, "\n").unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&empty_jsonl)]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("empty.jsonl: no articles (the file is empty)")
            && err.contains("no articles in the inputs"),
        "{err}"
    );

    // Binary files and bad lines become error lines naming the file (and line); the run goes on.
    let bin = d.join("blob.bin");
    std::fs::write(&bin, [0u8, 159, 146, 150, 0, 1]).unwrap();
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"Z\xfcrich").unwrap();
    let lines = d.join("lines.jsonl");
    std::fs::write(
        &lines,
        "{\"id\": \"ok\", \"text\": \"Tokayev met Japarov.\"}\n{oops\n{\"id\": \"nt\"}\n",
    )
    .unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&bin), s(&latin1), s(&lines)]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "{stdout}");
    assert_eq!(records[0]["id"], s(&bin));
    assert_eq!(records[0]["error"], "binary file (contains NUL bytes)");
    assert_eq!(records[1]["error"], "invalid UTF-8 at byte 1");
    assert_eq!(records[2]["id"], "ok");
    assert!(records[2]["entities"].is_array());
    assert_eq!(records[3]["id"], format!("{}:2", s(&lines)));
    // The location is named once: in the id when the line has none, else in the message.
    assert!(
        records[3]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: "),
        "{}",
        records[3]
    );
    assert_eq!(records[4]["id"], "nt");
    assert_eq!(
        records[4]["error"],
        format!("{}:3: missing \"text\"", s(&lines))
    );

    // A directory of mixed files: .txt and .jsonl tagged in name order, the rest skipped.
    let mixed = d.join("mixed");
    std::fs::create_dir_all(mixed.join("sub")).unwrap();
    std::fs::write(mixed.join("b.txt"), "Rahmon met Tokayev.").unwrap();
    std::fs::write(
        mixed.join("a.jsonl"),
        "{\"id\": \"j\", \"text\": \"Oil rose.\"}\n",
    )
    .unwrap();
    std::fs::write(mixed.join("c.pdf"), b"%PDF-1.4 \x00\x01").unwrap();
    std::fs::write(
        mixed.join("sub/d.txt"),
        "Not read: subdirectories are not walked.",
    )
    .unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&mixed)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<String> = String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["j".to_string(), s(&mixed.join("b.txt")).to_string()]);
    assert!(
        stderr(&out).contains("c.pdf: skipped (neither .txt nor .jsonl)")
            && stderr(&out).contains("sub: skipped (a subdirectory: only the top level is read)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_five_megabyte_article_is_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Full-size windows, as a real model has: the article is cut into about 5000 of them. No encoder
    // layers: what is tested is reading, windowing, decoding and offsets at this size, and a
    // million sub-tokens through even a tiny encoder would take minutes in a debug build.
    let tokenizer = newstag::model::tiny::tiny_tokenizer(&common::vocabulary()).unwrap();
    let mut bert = newstag::model::config::BertConfig::tiny(tokenizer.get_vocab_size(true));
    bert.num_hidden_layers = 0;
    let types = ["PER", "ORG", "LOC"].map(String::from);
    let topics = ["energy", "borders"].map(String::from);
    let model = d.join("model");
    NewsTagger::random(
        bert,
        tokenizer,
        &types,
        &topics,
        WindowConfig::default(),
        5,
        &Device::Cpu,
    )
    .unwrap()
    .save(&model)
    .unwrap();
    let sentence = "Tokayev met Mirziyoyev in Tashkent — «Gazprom» said “oil exports rose” 🚀. ";
    let mut text = String::with_capacity(5 << 20);
    while text.len() < 5 << 20 {
        text.push_str(sentence);
    }
    let path = d.join("huge.txt");
    std::fs::write(&path, &text).unwrap();
    let started = Instant::now();
    let out = newstag(&["tag", "--model", s(&model), "--batch-size", "256", s(&path)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entities = record["entities"].as_array().unwrap();
    assert!(!entities.is_empty());
    let chars: Vec<char> = text.chars().collect();
    for e in entities.iter().step_by(97) {
        let (a, b) = (
            e["start"].as_u64().unwrap() as usize,
            e["end"].as_u64().unwrap() as usize,
        );
        assert_eq!(e["text"], chars[a..b].iter().collect::<String>());
    }
    eprintln!(
        "5 MB article tagged in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}
