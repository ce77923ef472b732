//! Model directories and where a model comes from, through the `newstag` binary: a config.json
//! that disagrees with its weights is refused, a base that is not a BERT encoder is refused, a
//! saved model tells transformers to load its tokenizer as it is, training on weights gone bad
//! stops promptly, and a mistyped path is never sent to the hub.
//! Every case here is listed in docs/reliability.md.

mod common;

use candle_core::{Device, Tensor};
use common::{copy_model, edit_config, expect_model_error, random_model, s, stderr};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Rewrites a model directory's `model.safetensors` through `edit`.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

/// Runs `newstag` with `args` and extra environment, in `cwd`, failing after `limit`.
fn newstag_within(args: &[&str], env: &[(&str, &str)], cwd: &Path, limit: Duration) -> Output {
    common::run_within(
        Command::new(env!("CARGO_BIN_EXE_newstag"))
            .args(args)
            .envs(env.iter().copied())
            .current_dir(cwd),
        limit,
    )
}

/// As [`newstag_within`] with a minute's limit, offline (no test may reach the network).
fn newstag_offline(args: &[&str], cwd: &Path) -> Output {
    newstag_within(
        args,
        &[("HF_HUB_OFFLINE", "1")],
        cwd,
        Duration::from_secs(60),
    )
}

// ---------------------------------------------------------------- config.json against the weights

#[test]
fn a_config_that_disagrees_with_its_weights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = random_model(d);
    let variant = |name: &str| common::model_variant(&good, d, name);
    // Fewer layers than the checkpoint: before, 1 of 2 layers loaded silently.
    let m = variant("fewer-layers");
    edit_config(&m, |c| c["num_hidden_layers"] = 1.into());
    expect_model_error(
        &m,
        &format!(
            "{}: num_hidden_layers is 1 but {} has 2 encoder layers",
            m.join("config.json").display(),
            m.join("model.safetensors").display()
        ),
    );
    let m = variant("more-layers");
    edit_config(&m, |c| c["num_hidden_layers"] = 3.into());
    expect_model_error(&m, "num_hidden_layers is 3 but");

    // `[]` with a 2-row topic head, and an entities-only (Hugging Face) config with one.
    let m = variant("no-topics");
    edit_config(&m, |c| {
        c["newstag"]["topics"] = serde_json::json!([]);
        c["newstag"]["thresholds"] = serde_json::json!([]);
    });
    expect_model_error(
        &m,
        "config.json: lists no topics, but DIR/model.safetensors has a topic head with 2 outputs (topic_classifier.weight)"
            .replace("DIR", s(&m))
            .as_str(),
    );
    let m = variant("no-newstag-section");
    edit_config(&m, |c| {
        c.as_object_mut().unwrap().remove("newstag");
    });
    expect_model_error(&m, "lists no topics, but");
    let m = variant("topics-without-head");
    edit_weights(&m, |t| {
        t.retain(|name, _| !name.starts_with("topic_classifier."));
    });
    expect_model_error(
        &m,
        "config.json: lists 2 topics, but DIR/model.safetensors has no topic head (topic_classifier.weight is missing)"
            .replace("DIR", s(&m))
            .as_str(),
    );

    // A tensor of another model, and a poisoned weight.
    let m = variant("extra-tensor");
    edit_weights(&m, |t| {
        t.insert(
            "cls.predictions.bias".into(),
            Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
        );
    });
    expect_model_error(
        &m,
        "model.safetensors: 1 tensor(s) are not part of the model DIR/config.json describes, such as \"cls.predictions.bias\": the two files do not belong together"
            .replace("DIR", s(&m))
            .as_str(),
    );
    let m = variant("nan-weight");
    edit_weights(&m, |t| {
        let n = t["classifier.bias"].dims1().unwrap();
        let mut v = vec![0f32; n];
        v[0] = f32::NAN;
        t.insert(
            "classifier.bias".into(),
            Tensor::new(v.as_slice(), &Device::Cpu).unwrap(),
        );
    });
    expect_model_error(
        &m,
        "model.safetensors: tensor \"classifier.bias\" holds NaN or infinite values",
    );

    // Values out of range on their own.
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 10] = [
        (
            "eps-zero",
            |c| c["layer_norm_eps"] = 0.0.into(),
            "config.json: layer_norm_eps must be a positive number (got 0)",
        ),
        (
            "eps-negative",
            |c| c["layer_norm_eps"] = (-1e-12).into(),
            "layer_norm_eps must be a positive number (got -0.000000000001)",
        ),
        (
            "threshold-above-one",
            |c| c["newstag"]["thresholds"] = serde_json::json!([1.5, 0.5]),
            "config.json: the threshold of topic \"energy\" is 1.5: thresholds are probabilities, from 0 to 1",
        ),
        (
            "one-threshold",
            |c| c["newstag"]["thresholds"] = serde_json::json!([0.5]),
            "config.json: 2 topics but 1 thresholds: one threshold per topic",
        ),
        (
            "duplicate-topic",
            |c| c["newstag"]["topics"] = serde_json::json!(["energy", "energy"]),
            "config.json: topic \"energy\" is listed twice",
        ),
        (
            "gpt2",
            |c| c["model_type"] = "gpt2".into(),
            "config.json: model_type \"gpt2\" is not supported (supported: \"bert\", \"electra\", \"distilbert\", \"roberta\", \"xlm-roberta\", \"deberta-v2\", \"modernbert\")",
        ),
        (
            "swish",
            |c| c["hidden_act"] = "swish".into(),
            "config.json: invalid model config: unknown variant `swish`, expected one of `gelu`, `gelu_new`, `relu`",
        ),
        (
            "dropout-one",
            |c| c["hidden_dropout_prob"] = 1.0.into(),
            "config.json: hidden_dropout_prob must be at least 0 and below 1 (got 1)",
        ),
        (
            "tiny-window",
            |c| c["newstag"]["window"]["max_tokens"] = 4.into(),
            "config.json: window of 4 sub-tokens is too small (at least 8)",
        ),
        (
            "wide-overlap",
            |c| c["newstag"]["window"]["overlap"] = 10.into(),
            "config.json: window overlap 10 must be at most half of the window's 14 content tokens",
        ),
    ];
    for (name, edit, expect) in cases {
        let m = variant(name);
        edit_config(&m, edit);
        expect_model_error(&m, expect);
    }
}

#[test]
fn transformers_buffers_and_a_pooler_may_go_unused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = random_model(d);
    let m = d.join("with-buffers");
    copy_model(&good, &m);
    edit_weights(&m, |t| {
        let dev = Device::Cpu;
        let ids = Tensor::arange(0i64, 512, &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        t.insert("bert.embeddings.position_ids".into(), ids);
        let pooler = Tensor::zeros((32, 32), candle_core::DType::F32, &dev).unwrap();
        t.insert("bert.pooler.dense.weight".into(), pooler);
    });
    let txt = d.join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov in Astana.").unwrap();
    let out = newstag_offline(&["tag", "--model", s(&m), s(&txt)], d);
    assert!(out.status.success(), "{}", stderr(&out));
}

// ---------------------------------------------------------------- train --base

fn train_base(base: &Path, d: &Path, extra: &[&str]) -> Output {
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(6)).unwrap();
    let run = d.join(format!(
        "run-{}",
        base.file_name().unwrap().to_str().unwrap()
    ));
    let mut args = vec![
        "train",
        "--base",
        s(base),
        "--train",
        s(&data),
        "--out",
        s(&run),
        "--epochs",
        "1",
    ];
    args.extend(extra);
    newstag_offline(&args, d)
}

#[test]
fn a_base_must_be_a_bert_encoder_that_agrees_with_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);

    // A good base with a masked-LM head and a pooler of its own: only the new heads are fresh.
    let good = d.join("good");
    copy_model(&base, &good);
    edit_weights(&good, |t| {
        let dev = Device::Cpu;
        let z = |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &dev).unwrap();
        t.insert("cls.predictions.bias".into(), z(&[121]));
        t.insert("pooler.dense.weight".into(), z(&[32, 32]));
        t.insert("pooler.dense.bias".into(), z(&[32]));
    });
    let out = train_base(&good, d, &["--max-steps", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{}: encoder loaded; new heads initialised: classifier, topic_classifier\n",
            good.display()
        )),
        "{}",
        stderr(&out)
    );

    // More layers in the checkpoint than its config says.
    let fewer = d.join("fewer");
    copy_model(&base, &fewer);
    edit_config(&fewer, |c| c["num_hidden_layers"] = 1.into());
    let out = train_base(&fewer, d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("num_hidden_layers is 1 but")
            && stderr(&out).contains("has 2 encoder layers"),
        "{}",
        stderr(&out)
    );

    // Another architecture's tensors under a BERT config: before, a fresh random encoder trained.
    let electra = d.join("electra");
    copy_model(&base, &electra);
    edit_weights(&electra, |t| {
        *t = t
            .drain()
            .map(|(k, v)| (format!("electra.{k}"), v))
            .collect();
    });
    let out = train_base(&electra, d, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "error: {}: not a BERT checkpoint: no tensor under bert. or embeddings., encoder., pooler. (it holds electra.embeddings.LayerNorm.bias, ",
            electra.join("model.safetensors").display()
        )) && stderr(&out).contains("config.json's model_type \"bert\" chooses the architecture; its tensors are named as ELECTRA's (model_type \"electra\"): is config.json's model_type right?"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("run-electra").join("model.safetensors").exists());
}

// ---------------------------------------------------------------- training that cannot spin

fn hash(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// `--lr 1e30` on six short articles: one step per epoch, after which the weights are huge and
/// every forward pass gives NaN. Before, the dev evaluation's threshold search spun forever.
#[test]
fn weights_gone_bad_on_the_last_step_stop_training_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(6)).unwrap();
    for dev in [true, false] {
        let run = d.join(format!("run-dev-{dev}"));
        let mut args = vec![
            "train",
            "--base",
            s(&base),
            "--train",
            s(&data),
            "--out",
            s(&run),
            "--epochs",
            "1",
            "--lr",
            "1e30",
        ];
        if dev {
            args.extend(["--dev", s(&data)]);
        }
        let out = newstag_offline(&args, d);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "error: the loss became NaN after step 1 (epoch 1): stopping; no checkpoint had been written yet in {}. Try a lower --lr.",
                run.display()
            )),
            "{err}"
        );
        // The unusable weights were neither evaluated nor saved as the run's model.
        assert!(!run.join("model.safetensors").exists());
        assert!(!run.join("metrics.jsonl").exists());
    }
}

/// The known gap: the last step of an epoch making the weights unusable overwrote the run's
/// model, saved at the end of the epoch before any check. A finished one-epoch run is extended
/// to two at `--lr 1e30` (by editing its `training_args.json`) and resumed.
#[test]
fn a_bad_last_step_never_overwrites_the_runs_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("base");
    common::tiny_base(&base);
    let data = d.join("data.jsonl");
    std::fs::write(&data, common::corpus_jsonl(6)).unwrap();
    let run = d.join("run");
    let out = newstag_offline(
        &[
            "train",
            "--base",
            s(&base),
            "--train",
            s(&data),
            "--out",
            s(&run),
            "--epochs",
            "1",
            "--lr",
            "1e-3",
        ],
        d,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let before = hash(&run.join("model.safetensors"));
    let metrics = hash(&run.join("metrics.jsonl"));
    edit_config_file(&run.join("training_args.json"), |a| {
        a["options"]["lr"] = 1e30.into();
        a["options"]["epochs"] = 2.into();
    });
    let out = newstag_offline(&["train", "--resume", s(&run)], d);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("became NaN after step 2 (epoch 2): stopping; the last good checkpoint (step 1) is kept in")
            && err.contains("Try a lower --lr."),
        "{err}"
    );
    assert_eq!(hash(&run.join("model.safetensors")), before);
    assert_eq!(hash(&run.join("metrics.jsonl")), metrics);
    // The kept checkpoint loads (loading refuses non-finite weights).
    let kept = run.join("checkpoints/step-0000001");
    newstag::model::NewsTagger::load(&kept, &Device::Cpu).expect("the kept checkpoint loads");
}

fn edit_config_file(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

// ---------------------------------------------------------------- where a model comes from

fn prefill_cache(hf_home: &Path, id: &str, model: &Path) -> PathBuf {
    let repo = hf_home
        .join("hub")
        .join(format!("models--{}", id.replace('/', "--")));
    let snap = repo.join("snapshots").join("0123abcd");
    copy_model(model, &snap);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    snap
}

#[test]
fn mistyped_paths_and_hub_ids_offline_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = random_model(d);
    std::fs::create_dir_all(d.join("runs")).unwrap();
    copy_model(&good, &d.join("runs/conll"));
    let txt = d.join("a.txt");
    std::fs::write(&txt, "Tokayev met Japarov in Astana.").unwrap();
    let hf_home = d.join("hf-home");
    std::fs::create_dir_all(&hf_home).unwrap();
    let env = [("HF_HUB_OFFLINE", "1"), ("HF_HOME", s(&hf_home))];
    let limit = Duration::from_secs(60);
    let tag = |model: &str| newstag_within(&["tag", "--model", model, s(&txt)], &env, d, limit);

    // `runs/` exists, so `runs/conl` is a typo, not the hub id of user "runs".
    let out = tag("runs/conl");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: runs/conl: no such directory (did you mean runs/conll?)\n"
    );
    for spec in ["./conll", "runs/conll/x/", "~/runs/conll", "runs\\conll"] {
        let out = tag(spec);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with(&format!("error: {spec}: no such directory")),
            "{}",
            stderr(&out)
        );
    }

    // A hub id missing from the cache, offline: how to pre-fill it.
    let out = tag("acme/tiny-bert");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "error: acme/tiny-bert: config.json is not in the Hugging Face cache, and HF_HUB_OFFLINE is set, so the hub was not asked: on a machine with network, run `huggingface-cli download acme/tiny-bert` and copy its Hugging Face cache (~/.cache/huggingface) here as HF_HOME (this run looks in {}), or pass a local model directory\n",
            hf_home.join("hub").display()
        )
    );
    // The same id in a pre-filled cache tags.
    prefill_cache(&hf_home, "acme/tiny-bert", &good);
    let out = tag("acme/tiny-bert");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn a_saved_model_has_transformers_load_its_tokenizer_as_it_is() {
    // Without tokenizer_config.json, transformers rebuilds a family's tokenizer from its own
    // defaults (BERT's lowercases), so a cased model would read text differently there.
    let d = tempfile::tempdir().unwrap();
    let roberta =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families/roberta/base");
    let window = newstag::model::config::WindowConfig {
        max_tokens: 24,
        overlap: 6,
    };
    let types = ["PER"].map(String::from);
    let model =
        newstag::model::NewsTagger::from_base(&roberta, &types, &[], window, 1, &Device::Cpu)
            .unwrap();
    let out = d.path().join("roberta");
    model.save(&out).unwrap();
    for (dir, specials) in [
        (
            random_model(d.path()),
            ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"],
        ),
        (out, ["<s>", "</s>", "<pad>", "<unk>", "<mask>"]),
    ] {
        let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap();
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            config["tokenizer_class"], "PreTrainedTokenizerFast",
            "{text}"
        );
        let keys = [
            "cls_token",
            "sep_token",
            "pad_token",
            "unk_token",
            "mask_token",
        ];
        for (key, token) in keys.into_iter().zip(specials) {
            assert_eq!(config[key], token, "{key} in {text}");
        }
        // RoBERTa's positions start after the padding index (66 - 2 here).
        let positions = if specials[0] == "<s>" { 64 } else { 512 };
        assert_eq!(config["model_max_length"], positions, "{text}");
    }
}
