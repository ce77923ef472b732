//! The `newstag` binary end to end on a tiny random base model.

mod common;

use common::{newstag, stderr};
use std::path::Path;

#[test]
fn the_project_corpus_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<String> = ["train", "dev", "test"]
        .iter()
        .map(|s| root.join(format!("data/{s}.jsonl")).display().to_string())
        .collect();
    let out = newstag(&["validate", &files[0], &files[1], &files[2]]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
}

#[test]
fn validate_lists_problems_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\": \"a\", \"text\": \"Kazakhstan\", \"entities\": [{\"start\": 0, \"end\": 6, \"label\": \"LOC\"}]}\n{oops\n").unwrap();
    let out = newstag(&["validate", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "bad.jsonl:1: article \"a\": entity 0..6 LOC (\"Kazakh\") ends inside the word"
        ),
        "{text}"
    );
    assert!(text.contains("bad.jsonl:2: malformed JSON"), "{text}");
}

#[test]
fn train_eval_and_tag_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(12)).unwrap();
    let run = d.join("run");
    let (base_s, data_s, run_s) = (
        base.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let out = newstag(&[
        "train",
        "--base",
        base_s,
        "--train",
        data_s,
        "--dev",
        data_s,
        "--out",
        run_s,
        "--epochs",
        "2",
        "--batch-size",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "metrics.jsonl",
        "training_args.json",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForTokenClassification");
    assert_eq!(config["id2label"]["0"], "O");
    assert_eq!(
        config["newstag"]["topics"],
        serde_json::json!(["energy", "borders"])
    );

    let report = d.join("report.json");
    let out = newstag(&[
        "eval",
        "--model",
        run_s,
        "--data",
        data_s,
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("PER") && table.contains("micro"), "{table}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["documents"], 12);
    let f1 = r["entities"]["micro"]["f1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&f1));
    assert!(
        r["topics"]["per_label"]["energy"]["support"]
            .as_u64()
            .unwrap()
            > 0
    );

    let txt = d.join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov in Bishkek.").unwrap();
    let empty = d.join("b.txt");
    std::fs::write(&empty, "").unwrap();
    let jsonl = d.join("more.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\": \"j1\", \"text\": \"Rosatom said oil exports rose.\"}\n",
    )
    .unwrap();
    let tags = d.join("tags.jsonl");
    let html = d.join("tags.html");
    let out = newstag(&[
        "tag",
        "--model",
        run_s,
        txt.to_str().unwrap(),
        empty.to_str().unwrap(),
        jsonl.to_str().unwrap(),
        "--out",
        tags.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "one article failed: {}",
        stderr(&out)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&tags)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["id"].as_str().unwrap().ends_with("a.txt"));
    assert_eq!(lines[1]["error"], "empty article (no text)");
    assert_eq!(lines[2]["id"], "j1");
    for e in lines[0]["entities"].as_array().unwrap() {
        let (s, t) = (
            e["start"].as_u64().unwrap() as usize,
            e["end"].as_u64().unwrap() as usize,
        );
        let text: String = "Tokayev met Japarov in Bishkek."
            .chars()
            .skip(s)
            .take(t - s)
            .collect();
        assert_eq!(e["text"], text);
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<html") && page.contains("Tokayev"));
    scores_are_calibrated_reported_and_filtered(d, &run, &data, &jsonl);
}

/// The run calibrated its scores on dev; eval reports calibration; tag filters on scores, types
/// and topic thresholds.
fn scores_are_calibrated_reported_and_filtered(d: &Path, run: &Path, data: &Path, input: &Path) {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let calibration = &config["newstag"]["calibration"];
    assert!(
        calibration["entity_temperature"].as_f64().unwrap() > 0.0,
        "{config}"
    );
    assert_eq!(calibration["topics"].as_array().unwrap().len(), 2);
    let (run_s, data_s) = (run.to_str().unwrap(), data.to_str().unwrap());
    let page = d.join("eval.html");
    let out = newstag(&[
        "eval",
        "--model",
        run_s,
        "--data",
        data_s,
        "--html",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("calibration of topics: ECE"), "{table}");
    assert!(std::fs::read_to_string(&page)
        .unwrap()
        .contains("reliability diagram"));

    let tag = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["tag", "--model", run_s, data_s];
        args.extend(extra);
        let out = newstag(&args);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let field = |lines: &[serde_json::Value], key: &str| -> Vec<serde_json::Value> {
        lines
            .iter()
            .flat_map(|l| l[key].as_array().unwrap().clone())
            .collect()
    };
    let all = field(&tag(&[]), "entities");
    let kept = field(&tag(&["--min-score", "0.5"]), "entities");
    let expected: Vec<_> = all
        .iter()
        .filter(|e| e["score"].as_f64().unwrap() >= 0.5 - 1e-6)
        .cloned()
        .collect();
    assert_eq!(kept, expected);
    let per = field(&tag(&["--labels", "PER"]), "entities");
    assert!(per.iter().all(|e| e["label"] == "PER"));
    assert_eq!(
        per.len(),
        all.iter().filter(|e| e["label"] == "PER").count()
    );
    assert_eq!(
        field(&tag(&["--topic-threshold", "0"]), "topics").len(),
        2 * 12
    );
    let energy_only = field(
        &tag(&["--topic-threshold", "1", "--topic-threshold", "energy=0"]),
        "topics",
    );
    assert!(energy_only.len() >= 12 && energy_only.iter().all(|t| t["label"] == "energy"));
    for (args, expect) in [
        (vec!["--labels", "FOO"], "the model has no such entity type"),
        (
            vec!["--topic-threshold", "sport=0.5"],
            "the model has no topic \"sport\"",
        ),
        (vec!["--min-score", "1.5"], "must be a probability"),
    ] {
        let mut all_args = vec!["tag", "--model", run_s, input.to_str().unwrap()];
        all_args.extend(args);
        let out = newstag(&all_args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    }
}

#[test]
fn asking_for_a_missing_device_is_a_clear_error() {
    let out = newstag(&[
        "tag",
        "--model",
        "nowhere/model-dir-that-does-not-exist",
        "--device",
        "cuda",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--features cuda") || err.contains("CUDA"),
        "{err}"
    );
}
