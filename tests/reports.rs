//! Reports end to end on a tiny random model: the run's `curves.svg` and `index.html`, the
//! `eval --html` page, and `eval --predictions` scoring `tag` output exactly as `eval --model` does.

mod common;

use candle_core::Device;
use common::newstag;
use newstag::model::config::{BertConfig, WindowConfig};
use newstag::model::tiny::tiny_tokenizer;
use newstag::model::NewsTagger;
use std::path::Path;
use std::process::Output;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&read(p)).unwrap()
}

#[test]
fn run_pages_eval_page_and_predictions_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(12)).unwrap();
    let run = d.join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&newstag(&[
        "train",
        "--base",
        &s(&base),
        "--train",
        &s(&data),
        "--dev",
        &s(&data),
        "--out",
        &s(&run),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
    ]));

    // The run's pictures: both epochs, every series, links to the run's files.
    let svg = read(&run.join("curves.svg"));
    assert!(svg.starts_with("<svg"));
    for text in [
        "training loss",
        "dev F1",
        "PER F1",
        "LOC F1",
        "topic micro-F1",
    ] {
        assert!(svg.contains(text), "curves.svg lacks {text}");
    }
    let index = read(&run.join("index.html"));
    for text in [
        "<a href=\"metrics.jsonl\">",
        "<a href=\"config.json\">",
        "<svg",
        "Last evaluation",
        "dev set after epoch 2",
        "<td>energy</td>",
    ] {
        assert!(index.contains(text), "index.html lacks {text}");
    }
    // Two epochs in the epoch table, then the last evaluation's rows.
    assert!(index.matches("</tr>").count() > 2 + 3);
    assert!(!index.contains("<script") && !index.contains("src="));

    // eval --model with --html and --json.
    let page = d.join("eval.html");
    let model_report = d.join("model.json");
    let table = ok(&newstag(&[
        "eval",
        "--model",
        &s(&run),
        "--data",
        &s(&data),
        "--json",
        &s(&model_report),
        "--html",
        &s(&page),
    ]));
    assert!(table.contains("micro avg"));
    let html = read(&page);
    for text in [
        "<h2>Scores</h2>",
        "Entity-type confusion",
        "<th>missed</th>",
        "<th>spurious</th>",
        "Boundary errors",
        "Topic precision and recall",
        "Articles with the most errors",
        "model: ",
    ] {
        assert!(html.contains(text), "eval page lacks {text}");
    }
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    let report = json(&model_report);
    // 12 articles of 4 entities each.
    let gold_spans: u64 = report["entities"]["per_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["support"].as_u64().unwrap())
        .sum();
    assert_eq!(gold_spans, 12 * 4);

    // tag's output, scored as another system's predictions, gives the very same report.
    let tags = d.join("tags.jsonl");
    ok(&newstag(&[
        "tag",
        "--model",
        &s(&run),
        &s(&data),
        "--out",
        &s(&tags),
    ]));
    let pred_report = d.join("pred.json");
    let pred_page = d.join("pred.html");
    ok(&newstag(&[
        "eval",
        "--predictions",
        &s(&tags),
        "--data",
        &s(&data),
        "--json",
        &s(&pred_report),
        "--html",
        &s(&pred_page),
    ]));
    // The same scores; topic calibration needs every topic's probability, which tag's output
    // (the topics above threshold) does not carry.
    let mut expected = report.clone();
    expected["calibration"]["topics"] = serde_json::Value::Null;
    assert_eq!(json(&pred_report), expected);
    assert!(read(&pred_page).contains("predictions: "));

    // Mismatches name the line and the article.
    let lines: Vec<String> = read(&tags).lines().map(String::from).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    v["entities"] = serde_json::json!([{"start": 1, "end": 4, "label": "PER"}]);
    let mut broken = lines.clone();
    broken[3] = v.to_string();
    broken.remove(5);
    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, broken.join("\n")).unwrap();
    let out = newstag(&["eval", "--predictions", &s(&bad), "--data", &s(&data)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:4: article \"doc3\": entity 1..4 PER: \"ahm\"")
            && err.contains("is not whole words: starts inside the word \"Rahmon\""),
        "{err}"
    );
    assert!(
        err.contains("bad.jsonl: article \"doc5\": no prediction for this --data article"),
        "{err}"
    );
    let out = newstag(&["eval", "--data", &s(&data)]);
    assert!(
        !out.status.success(),
        "--model or --predictions is required"
    );
}

/// A plain token classifier (as transformers saves one: no `newstag` section, no topic head) scores
/// entities on data that also has topics.
#[test]
fn a_model_without_topics_evaluates_entities_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tokenizer = tiny_tokenizer(&common::vocabulary()).unwrap();
    let bert = BertConfig::tiny(tokenizer.get_vocab_size(true));
    let types = ["PER", "ORG", "LOC"].map(String::from);
    let model = NewsTagger::random(
        bert,
        tokenizer,
        &types,
        &[],
        WindowConfig::default(),
        3,
        &Device::Cpu,
    )
    .unwrap();
    let dir_model = d.join("hf");
    model.save(&dir_model).unwrap();
    let config_path = dir_model.join("config.json");
    let mut config = json(&config_path);
    config.as_object_mut().unwrap().remove("newstag");
    std::fs::write(&config_path, config.to_string()).unwrap();

    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(4)).unwrap();
    let report = d.join("r.json");
    let out = newstag(&[
        "eval",
        "--model",
        dir_model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
        report.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the model predicts no topics"));
    let r = json(&report);
    assert!(r["topics"].is_null());
    assert!(
        r["entities"]["per_type"]["PER"]["support"]
            .as_u64()
            .unwrap()
            > 0
    );
}
