//! Topics from passages (issue 17): the evidence a topic cites is one of the article's passages,
//! the smooth maximum finds a topic carried by one passage of a long article where the mean does
//! not, and models saved before passage pooling still load with the mean.

mod common;

use common::{edit_config, newstag, random_model, s};
use newstag::data::passages::passages;
use newstag::data::{Article, CharOffsets};
use newstag::infer::{PassageState, Predictor};
use newstag::model::topic_pooling::TopicPooling;
use newstag::model::NewsTagger;
use newstag::train::topic_head::{fit, Design};
use rand::{rngs::StdRng, Rng, SeedableRng};

const ARTICLE: &str = "Oil prices rose in Baku\n\nThe ministry said output rose in May. Exports \
                       to Turkey grew faster than expected this year.\nBorder guards in Astana \
                       met their Kyrgyz colleagues on Monday.";

#[test]
fn each_topic_cites_one_whole_passage_in_tag_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());
    // Thresholds 0: every topic is listed, with its evidence.
    edit_config(&model, |c| {
        c["newstag"]["thresholds"] = serde_json::json!([0.0, 0.0])
    });
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        serde_json::json!({"id": "a", "text": ARTICLE}).to_string() + "\n",
    )
    .unwrap();
    let out = newstag(&["tag", "--model", s(&model), s(&input)]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let article = Article::from_text("a", ARTICLE);
    let chars = CharOffsets::new(ARTICLE);
    let whole: Vec<(usize, usize)> = passages(&article)
        .into_iter()
        .map(|r| {
            let w = article.words();
            (
                chars.to_char(w[r.start].start),
                chars.to_char(w[r.end - 1].end),
            )
        })
        .collect();
    assert_eq!(whole.len(), 4, "headline, two sentences, one line");
    let topics = record["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    for t in topics {
        let e = &t["evidence"];
        let span = (
            e["start"].as_u64().unwrap() as usize,
            e["end"].as_u64().unwrap() as usize,
        );
        assert!(whole.contains(&span), "{span:?} is not one of {whole:?}");
    }
}

#[test]
fn evidence_and_scores_do_not_depend_on_batch_mates() {
    let dir = tempfile::tempdir().unwrap();
    let model = NewsTagger::load(&random_model(dir.path()), &candle_core::Device::Cpu).unwrap();
    assert!(model.topic_pooling().uses_passages());
    let a = Article::from_text("a", ARTICLE);
    let other = Article::from_text(
        "b",
        "Gas flows resumed.\nTrade talks stalled in Geneva today.",
    );
    let alone = Predictor::new(&model, 1)
        .unwrap()
        .predict(std::slice::from_ref(&a))
        .unwrap();
    let mixed = Predictor::new(&model, 8)
        .unwrap()
        .predict(&[other, a])
        .unwrap();
    assert_eq!(alone[0].topic_logits, mixed[1].topic_logits);
    assert_eq!(alone[0].topic_evidence, mixed[1].topic_evidence);
}

/// Articles of `passages` passages with feature 0 of each passage's state noise, except that one
/// passage of a topic article carries the signal.
fn synthetic(
    n: usize,
    passages: usize,
    rng: &mut StdRng,
) -> (Vec<Vec<PassageState>>, Vec<Vec<bool>>) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let topic = i % 2 == 0;
        let carrier = rng.random_range(0..passages);
        x.push(
            (0..passages)
                .map(|p| {
                    let signal = if topic && p == carrier { 4.0 } else { 0.0 };
                    PassageState {
                        mean: vec![
                            signal + rng.random_range(-1.0..1.0),
                            rng.random_range(-1.0..1.0),
                        ],
                        tokens: 10,
                    }
                })
                .collect(),
        );
        y.push(vec![topic]);
    }
    (x, y)
}

fn accuracy(probs: &[Vec<f32>], gold: &[Vec<bool>]) -> f64 {
    let right = probs
        .iter()
        .zip(gold)
        .filter(|(p, g)| (p[0] >= 0.5) == g[0])
        .count();
    right as f64 / gold.len() as f64
}

#[test]
fn one_strong_passage_in_a_long_article_is_found_by_the_smooth_maximum_not_the_mean() {
    let mut rng = StdRng::seed_from_u64(7);
    let (xt, yt) = synthetic(200, 20, &mut rng);
    let (xe, ye) = synthetic(200, 20, &mut rng);
    let mean = fit(&xt, &yt, 1e-2, Design::Mean).unwrap();
    let smooth = fit(&xt, &yt, 1e-2, Design::SmoothMax { fixed: None }).unwrap();
    let hard = fit(&xt, &yt, 1e-2, Design::SmoothMax { fixed: Some(0.05) }).unwrap();
    let (m, sm, h) = (
        accuracy(&mean.probs(&xe), &ye),
        accuracy(&smooth.probs(&xe), &ye),
        accuracy(&hard.probs(&xe), &ye),
    );
    assert!(h > 0.95 && sm > 0.9, "hard {h}, smooth {sm}");
    assert!(m < 0.85, "the mean dilutes one passage in twenty: {m}");
    // The learned temperature fell from where it started.
    let TopicPooling::SmoothMax { temperature } = smooth.pooling() else {
        panic!("a smooth maximum fits a smooth maximum")
    };
    assert!(temperature[0] < 1.0, "{temperature:?}");
}

#[test]
fn a_model_saved_before_passage_pooling_loads_with_the_mean() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());
    edit_config(&model, |c| {
        c["newstag"]
            .as_object_mut()
            .unwrap()
            .remove("topic_pooling");
    });
    let m = NewsTagger::load(&model, &candle_core::Device::Cpu).unwrap();
    assert_eq!(*m.topic_pooling(), TopicPooling::Mean);
    let p = Predictor::new(&m, 4)
        .unwrap()
        .predict(&[Article::from_text("a", ARTICLE)])
        .unwrap();
    assert!(p[0].topic_evidence.iter().all(Option::is_some));
    // A temperature of zero is refused, naming the file.
    edit_config(&model, |c| {
        c["newstag"]["topic_pooling"] =
            serde_json::json!({"smooth_max": {"temperature": [0.0, 1.0]}})
    });
    common::expect_model_error(&model, "temperatures must be positive");
}
