//! Entity chunking and scores against seqeval 1.2.2 (`tests/fixtures/seqeval_cases.json`, made by
//! `scripts/fixtures/make_seqeval_fixture.py`): every case, in strict (IOB2) and default mode.

use std::collections::BTreeSet;

use newstag::data::Tag;
use newstag::eval::{chunks, ChunkMode, EntityScorer, Scores};
use serde_json::Value;

const TOL: f64 = 1e-9;
const AVG_ROWS: [&str; 3] = ["micro avg", "macro avg", "weighted avg"];

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seqeval_cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sentences(v: &Value) -> Vec<Vec<Tag>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|t| Tag::parse(t.as_str().unwrap()).unwrap())
                .collect()
        })
        .collect()
}

/// Entities of every sentence as the fixture lists them: `[sentence, type, start, end]`, sorted.
fn extracted(sents: &[Vec<Tag>], mode: ChunkMode) -> Vec<Value> {
    let mut out: Vec<(usize, usize, usize, String)> = sents
        .iter()
        .enumerate()
        .flat_map(|(i, tags)| {
            chunks(tags, mode)
                .into_iter()
                .map(move |e| (i, e.words.start, e.words.end, e.label))
        })
        .collect();
    out.sort();
    out.into_iter()
        .map(|(i, s, e, t)| serde_json::json!([i, t, s, e]))
        .collect()
}

/// Compares one row; a `null` number in the fixture is seqeval's NaN.
fn check_row(what: &str, ours: Option<Scores>, expected: &Value) -> Result<(), String> {
    let Some(ours) = ours else {
        return if expected["precision"].is_null() {
            Ok(())
        } else {
            Err(format!("{what}: we have no value, seqeval has {expected}"))
        };
    };
    let mut errors = Vec::new();
    for (name, value) in [
        ("precision", ours.precision),
        ("recall", ours.recall),
        ("f1", ours.f1),
    ] {
        match expected[name].as_f64() {
            Some(e) if (e - value).abs() <= TOL => {}
            e => errors.push(format!("{name} {value} vs {e:?}")),
        }
    }
    if expected["support"].as_u64() != Some(ours.support as u64) {
        errors.push(format!(
            "support {} vs {}",
            ours.support, expected["support"]
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", errors.join(", ")))
    }
}

/// Every mismatch of one case in one mode.
fn check(case: &Value, mode: ChunkMode, key: &str) -> Vec<String> {
    let gold = sentences(&case["gold"]);
    let pred = sentences(&case["pred"]);
    let mut problems = Vec::new();
    for (side, sents) in [("gold", &gold), ("pred", &pred)] {
        let ours = extracted(sents, mode);
        let expected = case["entities"][key][side].as_array().unwrap();
        if &ours != expected {
            problems.push(format!("{side} entities {ours:?} vs seqeval {expected:?}"));
        }
    }

    // Sentence by sentence, as seqeval never joins entities across sentences.
    let mut scorer = EntityScorer::default();
    for (g, p) in gold.iter().zip(&pred) {
        scorer.add(&chunks(g, mode), &chunks(p, mode));
    }
    let report = case[key].as_object().unwrap();
    let per_type = scorer.per_type();
    let ours: BTreeSet<&str> = per_type.keys().map(String::as_str).collect();
    let theirs: BTreeSet<&str> = report
        .keys()
        .map(String::as_str)
        .filter(|k| !AVG_ROWS.contains(k))
        .collect();
    if ours != theirs {
        problems.push(format!("types {ours:?} vs seqeval {theirs:?}"));
    }
    for (label, counts) in &per_type {
        if let Some(expected) = report.get(label) {
            problems.extend(check_row(label, Some(counts.scores()), expected).err());
        }
    }
    problems.extend(check_row("micro avg", Some(scorer.micro()), &report["micro avg"]).err());
    problems.extend(check_row("macro avg", scorer.macro_avg(), &report["macro avg"]).err());
    problems
}

#[test]
fn entity_scores_match_seqeval_on_every_case() {
    let fixture = fixture();
    let cases = fixture["cases"].as_array().unwrap();
    assert!(
        cases.len() > 30,
        "only {} cases in the fixture",
        cases.len()
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        assert_eq!(
            case["gold"].as_array().unwrap().len(),
            case["pred"].as_array().unwrap().len(),
            "{name}: gold and pred differ in sentence count"
        );
        for (mode, key) in [
            (ChunkMode::Strict, "strict"),
            (ChunkMode::Lenient, "default"),
        ] {
            for p in check(case, mode, key) {
                failures.push(format!("{name} [{key}]: {p}"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * cases.len());
    assert!(
        failures.is_empty(),
        "{} mismatch(es) with seqeval:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
