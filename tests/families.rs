//! Every encoder family against transformers, on the tiny random checkpoints that
//! `scripts/fixtures/make_family_fixtures.py` made (tests/fixtures/families/FAMILY): the encoder's
//! hidden states match transformers' in inference and in the differentiable training path on a
//! padded batch; a base loads strictly (only the new heads initialised, a missing or stray encoder
//! tensor refused by name); training changes every trainable tensor and lowers the loss; a saved
//! model has its family's `...ForTokenClassification` config and tensor names and reloads to
//! identical predictions; a `...ForTokenClassification` saved by transformers loads and gives its
//! logits.

mod common;

use candle_core::{DType, Device, Tensor};
use common::train_options as options;
use newstag::infer::Predictor;
use newstag::model::bert::{Dropout, Mode, PreparedPath};
use newstag::model::config::WindowConfig;
use newstag::model::{NewsTagger, Precision};
use newstag::train::{train, TrainOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const FAMILIES: [&str; 7] = [
    "bert",
    "electra",
    "distilbert",
    "roberta",
    "xlm-roberta",
    "deberta-v2",
    "modernbert",
];

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/families")
        .join(family)
}

fn types() -> Vec<String> {
    ["PER", "ORG", "LOC"].map(String::from).to_vec()
}

fn topics() -> Vec<String> {
    ["energy", "borders"].map(String::from).to_vec()
}

const WINDOW: WindowConfig = WindowConfig {
    max_tokens: 24,
    overlap: 6,
};

fn from_base(base: &Path) -> NewsTagger {
    NewsTagger::from_base(base, &types(), &topics(), WINDOW, 1, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e:#}", base.display()))
}

fn reference(family: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(family).join("reference.safetensors"), &Device::Cpu)
        .unwrap()
}

/// The largest difference between `ours` and transformers' hidden states over the real tokens
/// (padding rows are nobody's output).
fn max_diff(ours: &Tensor, theirs: &Tensor, mask: &Tensor) -> f32 {
    let mask = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .broadcast_mul(&mask)
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn encoders_match_transformers_in_inference_and_training() {
    for family in FAMILIES {
        let model = from_base(&fixture(family).join("base"));
        let r = reference(family);
        let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
        let types = ids.zeros_like().unwrap();
        let lengths: Vec<u32> = mask.sum(1).unwrap().to_vec1().unwrap();
        assert!(
            lengths.windows(2).all(|w| w[0] != w[1]),
            "{family}: the batch needs rows of different lengths: {lengths:?}"
        );
        let encoder = model.encoder();
        let mut config = model.config.bert.clone();
        config.hidden_dropout_prob = 0.0;
        config.attention_probs_dropout_prob = 0.0;
        let check = |what: &str, mode: &mut Mode, path: Option<PreparedPath>| {
            let prepared = path.map(|p| encoder.prepare_for(Precision::F32, p).unwrap());
            let hidden = encoder
                .forward(&ids, &types, &mask, prepared.as_ref(), mode)
                .unwrap();
            let diff = max_diff(&hidden, &r["hidden"], &mask);
            assert!(diff < 1e-4, "{family} {what}: differs by {diff}");
        };
        check("inference", &mut Mode::Infer, None);
        // Families without prepared weights (f32 only: DeBERTa-v2, ModernBERT) ignore them, so
        // for them these two repeat plain inference.
        check(
            "prepared inference",
            &mut Mode::Infer,
            Some(PreparedPath::Cpu),
        );
        check("device path", &mut Mode::Infer, Some(PreparedPath::Device));
        check(
            "training (fused kernels)",
            &mut Mode::train(Dropout::new(&config, 1)),
            None,
        );
        check(
            "training (reference kernels)",
            &mut Mode::train(Dropout::new(&config, 1).with_reference_kernels()),
            None,
        );
    }
}

#[test]
fn a_token_classifier_saved_by_transformers_tags_as_it_does_there() {
    let dir = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        // transformers' save_pretrained of the model; the tokenizer is the base's.
        let saved = dir.path().join(family);
        std::fs::create_dir_all(&saved).unwrap();
        let from = fixture(family).join("token_classification");
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(from.join(f), saved.join(f)).unwrap();
        }
        std::fs::copy(
            fixture(family).join("base/tokenizer.json"),
            saved.join("tokenizer.json"),
        )
        .unwrap();
        let model =
            NewsTagger::load(&saved, &Device::Cpu).unwrap_or_else(|e| panic!("{family}: {e:#}"));
        assert_eq!(model.family().model_type(), family);
        assert_eq!(model.tags.len(), 9);
        assert!(model.topics().is_empty());
        let r = reference(family);
        let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
        let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
        let types = ids.zeros_like().unwrap();
        let logits = model
            .token_logits(&ids, &types, &mask, &mut Mode::Infer)
            .unwrap();
        let diff = max_diff(&logits, &r["logits"], &mask);
        assert!(diff < 1e-4, "{family}: logits differ by {diff}");
        let tagged = Predictor::new(&model, 2)
            .unwrap()
            .predict(&common::corpus(2))
            .unwrap();
        assert_eq!(tagged.len(), 2);
    }
}

/// The base's own heads, which are not part of the tagger.
fn expected_dropped(family: &str) -> &'static [&'static str] {
    match family {
        "electra" => &[
            "discriminator_predictions.dense.bias",
            "discriminator_predictions.dense.weight",
            "discriminator_predictions.dense_prediction.bias",
            "discriminator_predictions.dense_prediction.weight",
        ],
        "xlm-roberta" => &[
            "lm_head.bias",
            "lm_head.dense.bias",
            "lm_head.dense.weight",
            "lm_head.layer_norm.bias",
            "lm_head.layer_norm.weight",
        ],
        "deberta-v2" => &[
            "cls.predictions.bias",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.dense.weight",
        ],
        // The masked LM's head, though its token classifier has a `head` of the same shape.
        "modernbert" => &["decoder.bias", "head.dense.weight", "head.norm.weight"],
        _ => &[],
    }
}

/// The heads a tagger made from the base initialises: the entity and topic heads, and the
/// token classifier's own `head` before them where the family has one.
fn expected_initialised(family: &str) -> &'static [&'static str] {
    match family {
        "modernbert" => &["classifier", "head.dense", "head.norm", "topic_classifier"],
        _ => &["classifier", "topic_classifier"],
    }
}

/// How a family's checkpoint names encoder layer `i` (`encoder.layer.1.`, `layers.1.`).
fn layer_infix(family: &str, i: usize) -> String {
    match family {
        "modernbert" => format!("layers.{i}."),
        _ => format!("layer.{i}."),
    }
}

fn copy_base(family: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture(family).join("base").join(f), to.join(f)).unwrap();
    }
}

fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

fn error(dir: &Path) -> String {
    match NewsTagger::from_base(dir, &types(), &topics(), WINDOW, 1, &Device::Cpu) {
        Ok(_) => panic!("{}: loaded", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn a_base_loads_whole_and_only_the_new_heads_are_initialised() {
    let dir = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let model = from_base(&fixture(family).join("base"));
        assert_eq!(model.family().model_type(), family);
        assert_eq!(
            model.initialised_heads(),
            expected_initialised(family),
            "{family}"
        );
        assert_eq!(
            model.dropped_base_tensors(),
            expected_dropped(family),
            "{family}"
        );

        // An encoder tensor the model has no place for: refused by name.
        let stray = dir.path().join(format!("{family}-stray"));
        copy_base(family, &stray);
        let mut name = String::new();
        let layer1 = layer_infix(family, 1);
        edit_weights(&stray, |t| {
            // ModernBERT's layers have no biases.
            let (k, v) = t
                .iter()
                .filter(|(k, _)| k.contains(&layer1))
                .min_by_key(|(k, _)| !k.ends_with("bias"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap();
            name = k.replace(&layer1, &format!("{layer1}extra."));
            t.insert(name.clone(), v);
        });
        let e = error(&stray);
        assert!(
            e.contains("are not part of the model") && e.contains("extra."),
            "{family}: {e}"
        );

        // A missing encoder tensor: refused by name, not initialised.
        let missing = dir.path().join(format!("{family}-missing"));
        copy_base(family, &missing);
        let mut gone = String::new();
        let layer0 = layer_infix(family, 0);
        edit_weights(&missing, |t| {
            gone = t
                .keys()
                .find(|k| k.contains(&layer0) && k.ends_with("weight"))
                .unwrap()
                .clone();
            t.remove(&gone);
        });
        let e = error(&missing);
        let short = gone.rsplit(&layer0).next().unwrap();
        assert!(
            e.contains("is missing from the checkpoint") && e.contains(short),
            "{family}: {e} (removed {gone})"
        );
    }
}

#[test]
fn the_window_must_fit_the_positions_after_robertas_offset() {
    for family in ["roberta", "xlm-roberta"] {
        // 66 position embeddings, of which the first two are never a token's.
        let window = WindowConfig {
            max_tokens: 65,
            overlap: 8,
        };
        let base = fixture(family).join("base");
        let e = match NewsTagger::from_base(&base, &types(), &topics(), window, 1, &Device::Cpu) {
            Ok(_) => panic!("{family}: a 65-token window loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains(&format!("{family} numbers positions from 2, so 64 of its 66 position embeddings hold tokens: window of 65 sub-tokens exceeds the model's 64 positions")),
            "{e}"
        );
        let window = WindowConfig {
            max_tokens: 64,
            ..window
        };
        NewsTagger::from_base(&base, &types(), &topics(), window, 1, &Device::Cpu).unwrap();
    }
}

/// The trainable tensors of `model` that one optimiser step on a small corpus leaves as they
/// were (the run goes to `run`).
fn unchanged_by_one_step(model: &mut NewsTagger, run: &Path) -> Vec<String> {
    let before = common::tensor_values(model);
    let opts = TrainOptions {
        max_steps: Some(1),
        ..options(1)
    };
    train(model, &common::corpus(8), &[], &opts, run, None).unwrap();
    common::unchanged_tensors(&before, model)
}

#[test]
fn distilberts_sinusoidal_positions_stay_frozen() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    copy_base("distilbert", &base);
    edit_config(&base, |c| c["sinusoidal_pos_embds"] = true.into());
    let mut model = from_base(&base);
    let run = dir.path().join("run");
    assert_eq!(
        unchanged_by_one_step(&mut model, &run),
        ["distilbert.embeddings.position_embeddings.weight"]
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["sinusoidal_pos_embds"], true);
}

#[test]
fn one_step_changes_every_trainable_tensor_and_loss_goes_down() {
    for family in FAMILIES {
        let run = tempfile::tempdir().unwrap();
        let mut model = from_base(&fixture(family).join("base"));
        let unchanged = unchanged_by_one_step(&mut model, run.path());
        assert!(
            unchanged.is_empty(),
            "{family}: did not change: {unchanged:?}"
        );

        let run = tempfile::tempdir().unwrap();
        let mut model = from_base(&fixture(family).join("base"));
        let data = common::corpus(8);
        let summary = train(&mut model, &data, &[], &options(4), run.path(), None).unwrap();
        let losses: Vec<f64> = summary.history.iter().map(|r| r.train_loss).collect();
        assert!(
            losses.last().unwrap() < &losses[0],
            "{family}: losses {losses:?}"
        );
    }
}

#[derive(serde::Deserialize)]
struct TokenClassification {
    architecture: String,
    tensors: Vec<String>,
}

#[test]
fn a_saved_model_is_its_familys_token_classifier_and_reloads_identically() {
    for family in FAMILIES {
        let dir = tempfile::tempdir().unwrap();
        let model = from_base(&fixture(family).join("base"));
        model.save(dir.path()).unwrap();

        let expected: TokenClassification = serde_json::from_str(
            &std::fs::read_to_string(fixture(family).join("token_classification.json")).unwrap(),
        )
        .unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], family);
        assert_eq!(config["architectures"][0], expected.architecture.as_str());
        // What transformers reads: DistilBERT's config under its own names.
        let hidden = if family == "distilbert" {
            "dim"
        } else {
            "hidden_size"
        };
        assert_eq!(config[hidden], 32, "{family}: {config}");
        let saved =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let mut names: Vec<&str> = saved
            .keys()
            .map(String::as_str)
            .filter(|n| !n.starts_with("topic_classifier."))
            .collect();
        names.sort();
        assert_eq!(names, expected.tensors, "{family}");

        let reloaded = NewsTagger::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(reloaded.family(), model.family());
        let data = common::corpus(6);
        let a = Predictor::new(&model, 3).unwrap().predict(&data).unwrap();
        let b = Predictor::new(&reloaded, 2)
            .unwrap()
            .predict(&data)
            .unwrap();
        assert!(
            a.iter().any(|p| !p.entities.is_empty()),
            "{family}: no entities at all"
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.entities, y.entities, "{family}");
            assert_eq!(x.topic_probs, y.topic_probs, "{family}");
        }
    }
}

/// A base directory made of DeBERTa-v2's `variant` fixture (a bare `DebertaV2Model`) and the
/// family's tokenizer.
fn deberta_variant_base(to: &Path) -> PathBuf {
    let variant = fixture("deberta-v2").join("variant");
    let base = to.join("variant");
    std::fs::create_dir_all(&base).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(variant.join(f), base.join(f)).unwrap();
    }
    std::fs::copy(
        fixture("deberta-v2").join("base/tokenizer.json"),
        base.join("tokenizer.json"),
    )
    .unwrap();
    base
}

#[test]
fn deberta_v2s_other_options_match_transformers_too() {
    // Absolute positions, token types, separate position projections, "p2c|c2p" as a string,
    // relative distances without buckets and without their LayerNorm, and the convolution layer.
    let dir = tempfile::tempdir().unwrap();
    let base = deberta_variant_base(dir.path());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["pos_att_type"], "p2c|c2p");
    assert_eq!(config["share_att_key"], false);
    assert_eq!(config["conv_kernel_size"], 3);
    let model = from_base(&base);
    assert!(model
        .vars()
        .contains_key("deberta.encoder.conv.conv.weight"));
    assert_eq!(
        model.initialised_heads(),
        ["classifier", "topic_classifier"]
    );
    let r = candle_core::safetensors::load(
        fixture("deberta-v2").join("variant/reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
    let types = r["token_type_ids"].to_dtype(DType::U32).unwrap();
    assert!(types.sum_all().unwrap().to_scalar::<u32>().unwrap() > 0);
    let mut config = model.config.bert.clone();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let modes: [(&str, Mode); 3] = [
        ("inference", Mode::Infer),
        (
            "training (fused kernels)",
            Mode::train(Dropout::new(&config, 1)),
        ),
        (
            "training (reference kernels)",
            Mode::train(Dropout::new(&config, 1).with_reference_kernels()),
        ),
    ];
    for (what, mut mode) in modes {
        let hidden = model
            .encoder()
            .forward(&ids, &types, &mask, None, &mut mode)
            .unwrap();
        let diff = max_diff(&hidden, &r["hidden"], &mask);
        assert!(diff < 1e-4, "deberta-v2 variant {what}: differs by {diff}");
        // Training builds the graph its backward pass needs; inference hands out none.
        assert_eq!(hidden.track_op(), mode.is_train(), "{what}");
    }
    // The options go back into the saved config.json as they came, for transformers to read.
    let saved = dir.path().join("saved");
    model.save(&saved).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    for key in [
        "pos_att_type",
        "share_att_key",
        "position_biased_input",
        "relative_attention",
        "max_relative_positions",
        "type_vocab_size",
        "conv_kernel_size",
        "conv_act",
    ] {
        assert_eq!(written[key], config_value(&base, key), "{key}");
    }
    assert!(written.get("position_buckets").is_none(), "{written}");

    // Training reaches every tensor, the convolution's too.
    let mut model = from_base(&base);
    assert_eq!(
        unchanged_by_one_step(&mut model, &dir.path().join("run")),
        Vec::<String>::new()
    );
}

fn config_value(dir: &Path, key: &str) -> serde_json::Value {
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config[key].clone()
}

#[test]
fn a_saved_deberta_v3_keeps_its_attention_options() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("deberta-v2").join("base");
    from_base(&base).save(dir.path()).unwrap();
    for key in [
        "relative_attention",
        "max_relative_positions",
        "position_buckets",
        "position_biased_input",
        "pos_att_type",
        "share_att_key",
        "norm_rel_ebd",
        "type_vocab_size",
        "embedding_size",
        "layer_norm_eps",
    ] {
        let want = config_value(&base, key);
        assert!(!want.is_null(), "{key} missing from the fixture");
        assert_eq!(config_value(dir.path(), key), want, "{key}");
    }
}

#[test]
fn deberta_v2_options_newstag_lacks_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let base = deberta_variant_base(dir.path());
    edit_config(&base, |c| c["conv_act"] = "swish".into());
    let e = error(&base);
    assert!(
        e.contains("config.json")
            && e.contains("conv_act \"swish\" is not supported (only \"tanh\", \"gelu\", \"gelu_new\" and \"relu\")"),
        "{e}"
    );
    // A convolution layer the config does not declare is a stray tensor.
    let base = dir.path().join("conv");
    copy_base("deberta-v2", &base);
    edit_weights(&base, |t| {
        let w = Tensor::zeros((32, 32, 3), DType::F32, &Device::Cpu).unwrap();
        t.insert("deberta.encoder.conv.conv.weight".into(), w);
    });
    let e = error(&base);
    assert!(
        e.contains("are not part of the model") && e.contains("deberta.encoder.conv.conv.weight"),
        "{e}"
    );
}

#[test]
fn unused_absolute_positions_of_a_deberta_v3_are_ignored_as_transformers_does() {
    // Some DeBERTa-v3 checkpoints carry a position table that `position_biased_input: false`
    // leaves unused; transformers ignores it on load.
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("positions");
    copy_base("deberta-v2", &base);
    edit_weights(&base, |t| {
        let table = Tensor::zeros((64, 16), DType::F32, &Device::Cpu).unwrap();
        t.insert(
            "deberta.embeddings.position_embeddings.weight".into(),
            table,
        );
    });
    let model = from_base(&base);
    assert!(!model
        .vars()
        .keys()
        .any(|k| k.contains("position_embeddings")));
}

#[test]
fn deberta_v2_runs_in_f32_only() {
    let model = from_base(&fixture("deberta-v2").join("base"));
    for precision in [Precision::Bf16, Precision::Int8] {
        let e = model.prepare(precision).err().unwrap().to_string();
        assert_eq!(
            e,
            "the DeBERTa-v2 encoder runs in f32 only (use --precision f32 or auto)"
        );
    }
    let (precision, line) =
        newstag::model::PrecisionChoice::Auto.resolve(&Device::Cpu, model.family());
    assert_eq!(precision, Precision::F32);
    assert!(line
        .unwrap()
        .contains("the DeBERTa-v2 encoder runs in f32 only"));
    model.prepare(Precision::F32).unwrap();
}

#[test]
fn deberta_v2s_windows_open_close_and_pad_as_its_tokenizer_does() {
    let model = from_base(&fixture("deberta-v2").join("base"));
    let r = reference("deberta-v2");
    let ids: Vec<Vec<i64>> = r["input_ids"].to_vec2().unwrap();
    let lengths: Vec<i64> = r["attention_mask"].sum(1).unwrap().to_vec1().unwrap();
    let token = |t: &str| model.tokenizer.token_to_id(t).unwrap();
    let s = model.special;
    assert_eq!(
        (s.cls, s.sep, s.pad),
        (token("[CLS]"), token("[SEP]"), token("[PAD]"))
    );
    // transformers' batch: [CLS] ... [SEP] then [PAD]s.
    for (row, n) in ids.iter().zip(lengths) {
        let n = n as usize;
        assert_eq!(row[0], s.cls as i64);
        assert_eq!(row[n - 1], s.sep as i64);
        assert!(row[n..].iter().all(|&t| t == s.pad as i64));
    }
}

/// The largest difference between ModernBERT's hidden states on the reference batch, with
/// `config.json` edited by `edit`, and transformers' (made with the unedited config).
fn modernbert_diff_with(edit: impl FnOnce(&mut serde_json::Value)) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    copy_base("modernbert", dir.path());
    edit_config(dir.path(), edit);
    let model = from_base(dir.path());
    let r = reference("modernbert");
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
    let hidden = model
        .encoder()
        .forward(
            &ids,
            &ids.zeros_like().unwrap(),
            &mask,
            None,
            &mut Mode::Infer,
        )
        .unwrap();
    max_diff(&hidden, &r["hidden"], &mask)
}

#[test]
fn modernberts_fixture_exercises_the_local_window_and_both_rotary_bases() {
    assert!(modernbert_diff_with(|_| ()) < 1e-4);
    // The reference rows (19 to 49 tokens) exceed the local window of 8 in layer 1, and the two
    // kinds of layer rotate with their own bases: each setting changes the output.
    let wider = modernbert_diff_with(|c| c["local_attention"] = 128.into());
    assert!(wider > 1e-3, "a wider window changed nothing: {wider}");
    let all_global = modernbert_diff_with(|c| {
        c["layer_types"] = serde_json::json!(["full_attention", "full_attention"]);
    });
    assert!(all_global > 1e-3, "{all_global}");
    for kind in ["full_attention", "sliding_attention"] {
        let other = modernbert_diff_with(|c| {
            c["rope_parameters"][kind]["rope_theta"] = 500.0.into();
        });
        assert!(
            other > 1e-3,
            "{kind}'s rotary base changed nothing: {other}"
        );
    }
}

#[test]
fn a_modernbert_window_does_not_depend_on_its_batch() {
    let model = from_base(&fixture("modernbert").join("base"));
    let r = reference("modernbert");
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::U32).unwrap();
    let forward = |ids: &Tensor, mask: &Tensor| {
        model
            .encoder()
            .forward(
                ids,
                &ids.zeros_like().unwrap(),
                mask,
                None,
                &mut Mode::Infer,
            )
            .unwrap()
    };
    let batch = forward(&ids, &mask);
    let lengths: Vec<u32> = mask.sum(1).unwrap().to_vec1().unwrap();
    for (row, &n) in lengths.iter().enumerate() {
        let n = n as usize;
        let alone = forward(
            &ids.narrow(0, row, 1).unwrap().narrow(1, 0, n).unwrap(),
            &mask.narrow(0, row, 1).unwrap().narrow(1, 0, n).unwrap(),
        );
        let in_batch = batch.narrow(0, row, 1).unwrap().narrow(1, 0, n).unwrap();
        assert_eq!(
            alone.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            in_batch.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "row {row}"
        );
    }
}

#[test]
fn modernbert_saves_its_own_config_names_and_runs_in_f32_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = from_base(&fixture("modernbert").join("base"));
    model.save(dir.path()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    let base: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("modernbert").join("base/config.json")).unwrap(),
    )
    .unwrap();
    // What transformers reads, as transformers wrote it for the base.
    for key in [
        "hidden_activation",
        "norm_eps",
        "norm_bias",
        "mlp_dropout",
        "attention_dropout",
        "layer_types",
        "rope_parameters",
        "local_attention",
        "global_attn_every_n_layers",
        "intermediate_size",
        "max_position_embeddings",
    ] {
        assert_eq!(saved[key], base[key], "{key}");
    }
    for bert_only in [
        "hidden_act",
        "layer_norm_eps",
        "hidden_dropout_prob",
        "type_vocab_size",
        "position_embedding_type",
    ] {
        assert!(saved.get(bert_only).is_none(), "{bert_only} in {saved}");
    }
    let reloaded = NewsTagger::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(reloaded.config, model.config);

    for precision in [Precision::Bf16, Precision::Int8] {
        let e = model.prepare(precision).err().unwrap().to_string();
        assert!(e.contains("the ModernBERT encoder runs in f32 only"), "{e}");
    }
    let (auto, _) = newstag::model::PrecisionChoice::Auto.resolve(&Device::Cpu, model.family());
    assert_eq!(auto, Precision::F32);
}

#[test]
fn the_window_must_fit_modernberts_positions() {
    // The fixture has 64 positions (ModernBERT's own checkpoints 8192).
    let base = fixture("modernbert").join("base");
    let window = |max_tokens| WindowConfig {
        max_tokens,
        overlap: 8,
    };
    let e = match NewsTagger::from_base(&base, &types(), &topics(), window(65), 1, &Device::Cpu) {
        Ok(_) => panic!("a 65-token window loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("window of 65 sub-tokens exceeds the model's 64 positions"),
        "{e}"
    );
    NewsTagger::from_base(&base, &types(), &topics(), window(64), 1, &Device::Cpu).unwrap();
}

#[test]
fn modernberts_optional_biases_are_loaded_when_its_config_has_them() {
    // The fixture has none, as ModernBERT's own checkpoints: each flag makes its biases required.
    let dir = tempfile::tempdir().unwrap();
    for (flag, tensor) in [
        ("norm_bias", "model.embeddings.norm.bias"),
        ("attention_bias", "model.layers.0.attn.Wqkv.bias"),
        ("mlp_bias", "model.layers.0.mlp.Wi.bias"),
    ] {
        let base = dir.path().join(flag);
        copy_base("modernbert", &base);
        edit_config(&base, |c| c[flag] = true.into());
        let e = error(&base);
        assert!(
            e.contains(&format!(
                "tensor \"{tensor}\" is missing from the checkpoint"
            )),
            "{flag}: {e}"
        );
    }
}
