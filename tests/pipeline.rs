//! End to end on tiny random models: training learns, every tensor trains, saved models reload to
//! identical predictions, and offsets land on the right characters.

mod common;

use candle_core::Device;
use common::train_options as options;
use newstag::data::Article;
use newstag::infer::output::OutputRecord;
use newstag::infer::Predictor;
use newstag::model::config::WindowConfig;
use newstag::model::NewsTagger;
use newstag::train::{train, TrainOptions};

fn types() -> Vec<String> {
    ["PER", "ORG", "LOC"].map(String::from).to_vec()
}

fn topics() -> Vec<String> {
    ["energy", "borders"].map(String::from).to_vec()
}

fn fresh_model(dir: &std::path::Path, window: WindowConfig) -> NewsTagger {
    common::tiny_base(dir);
    NewsTagger::from_base(dir, &types(), &topics(), window, 1, &Device::Cpu).unwrap()
}

#[test]
fn loss_goes_down_and_the_model_learns_the_data() {
    let base = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let mut model = fresh_model(base.path(), WindowConfig::default());
    let data = common::corpus(24);
    let summary = train(&mut model, &data, &data, &options(12), run.path(), None).unwrap();
    let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.5),
        "losses {losses:?}"
    );
    let refit = summary.history.last().unwrap();
    assert!(
        refit
            .note
            .as_deref()
            .is_some_and(|n| n.contains("topic head refit")),
        "{refit:?}"
    );
    let best = summary.best_score.unwrap();
    assert!(best > 0.8, "dev score {best} on the training data");
    assert!(
        run.path().join("model.safetensors").exists() && run.path().join("metrics.jsonl").exists()
    );
}

#[test]
fn one_step_changes_every_trainable_tensor() {
    let base = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let mut model = fresh_model(base.path(), WindowConfig::default());
    let before = common::tensor_values(&model);
    assert!(before.len() > 30, "{} tensors", before.len());
    let opts = TrainOptions {
        max_steps: Some(1),
        ..options(1)
    };
    train(&mut model, &common::corpus(8), &[], &opts, run.path(), None).unwrap();
    let unchanged = common::unchanged_tensors(&before, &model);
    assert!(unchanged.is_empty(), "did not change: {unchanged:?}");
}

#[test]
fn saved_model_reloads_to_identical_predictions() {
    let base = tempfile::tempdir().unwrap();
    let run = tempfile::tempdir().unwrap();
    let mut model = fresh_model(
        base.path(),
        WindowConfig {
            max_tokens: 16,
            overlap: 4,
        },
    );
    let data = common::corpus(12);
    train(
        &mut model,
        &data,
        &data,
        &TrainOptions {
            max_steps: Some(5),
            ..options(1)
        },
        run.path(),
        None,
    )
    .unwrap();
    let reloaded = NewsTagger::load(run.path(), &Device::Cpu).unwrap();
    let a = Predictor::new(&model, 3).unwrap().predict(&data).unwrap();
    // Bit-identical at any batch size: an article's windows give the same numbers whatever they
    // are batched (and padded) with.
    for batch in [3, 5, 64, 2, 1] {
        let b = Predictor::new(&reloaded, batch)
            .unwrap()
            .predict(&data)
            .unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.entities, y.entities, "batch {batch}");
            assert_eq!(x.topic_probs, y.topic_probs, "batch {batch}");
        }
    }
    assert_eq!(model.thresholds(), reloaded.thresholds());
}

#[test]
fn output_offsets_land_on_the_right_characters() {
    let base = tempfile::tempdir().unwrap();
    // Small windows so the text spans several; random weights predict entities all over.
    let model = fresh_model(
        base.path(),
        WindowConfig {
            max_tokens: 12,
            overlap: 2,
        },
    );
    let text = "Zürich — «Gazprom» said “Tokayev’s” visit to Москва was 🚀 great; Ünal Şahin and Đặng met in Tashkent.\n\nNAZARBAYEV UNIVERSITY café naïve";
    let article = Article::from_text("tricky", text);
    let p = Predictor::new(&model, 4)
        .unwrap()
        .predict(std::slice::from_ref(&article))
        .unwrap();
    let OutputRecord::Tagged { entities, .. } =
        OutputRecord::tagged(&article, &p[0], model.topics(), model.thresholds())
    else {
        panic!("not tagged")
    };
    assert!(
        !entities.is_empty(),
        "a random model should predict some entities"
    );
    let chars: Vec<char> = text.chars().collect();
    for e in &entities {
        let slice: String = chars[e.start..e.end].iter().collect();
        assert_eq!(slice, e.text);
        assert!((0.0..=1.0).contains(&e.score));
        assert!(!e.text.starts_with(char::is_whitespace) && !e.text.ends_with(char::is_whitespace));
    }
}
