//! int8 inference end to end: the prepared int8 path gives each article the same bits whatever
//! its batch-mates, stays close to f32, and `--precision int8` works for `tag` and `eval`.

mod common;

use candle_core::Device;
use common::{newstag, random_model, s, stderr};
use newstag::infer::{ArticlePrediction, Predictor};
use newstag::kernels::int8::Int8Kernel;
use newstag::model::family::Family;
use newstag::model::{NewsTagger, Precision};

/// Everything a prediction says, with every number as its bits.
fn bits(p: &ArticlePrediction) -> String {
    let entities: Vec<_> = p
        .entities
        .iter()
        .map(|e| (&e.entity.words, &e.entity.label, e.score.to_bits()))
        .collect();
    let topics: Vec<_> = p.topic_probs.iter().map(|v| v.to_bits()).collect();
    let words: Vec<Vec<_>> = p
        .word_probs
        .iter()
        .map(|w| w.iter().map(|v| v.to_bits()).collect())
        .collect();
    format!("{entities:?} {topics:?} {words:?}")
}

#[test]
fn an_article_gets_the_same_bits_whatever_its_batch_mates() {
    let dir = tempfile::tempdir().unwrap();
    let model = NewsTagger::load(&random_model(dir.path()), &Device::Cpu).unwrap();
    let articles = common::corpus(12);
    let together = Predictor::with_precision(&model, 32, Precision::Int8)
        .unwrap()
        .keeping_word_probs()
        .predict(&articles)
        .unwrap();
    let one_window = Predictor::with_precision(&model, 1, Precision::Int8)
        .unwrap()
        .keeping_word_probs();
    // Other batch-mates: the articles in reverse, three at a time.
    let reversed: Vec<_> = articles.iter().rev().cloned().collect();
    let in_threes = Predictor::with_precision(&model, 3, Precision::Int8)
        .unwrap()
        .keeping_word_probs()
        .predict(&reversed)
        .unwrap();
    for (i, article) in articles.iter().enumerate() {
        let alone = one_window.predict(std::slice::from_ref(article)).unwrap();
        assert_eq!(bits(&alone[0]), bits(&together[i]), "{}", article.id);
        let j = articles.len() - 1 - i;
        assert_eq!(bits(&in_threes[j]), bits(&together[i]), "{}", article.id);
    }
}

#[test]
fn int8_word_probabilities_stay_close_to_f32_but_are_not_them() {
    let dir = tempfile::tempdir().unwrap();
    let model = NewsTagger::load(&random_model(dir.path()), &Device::Cpu).unwrap();
    let articles = common::corpus(6);
    let probs = |precision| {
        Predictor::with_precision(&model, 8, precision)
            .unwrap()
            .keeping_word_probs()
            .predict(&articles)
            .unwrap()
    };
    let (exact, int8) = (probs(Precision::F32), probs(Precision::Int8));
    let (mut worst, mut differ) = (0f32, false);
    for (a, b) in exact.iter().zip(&int8) {
        for (a, b) in a
            .word_probs
            .iter()
            .flatten()
            .zip(b.word_probs.iter().flatten())
        {
            worst = worst.max((a - b).abs());
            differ |= a != b;
        }
    }
    assert!(differ, "the int8 path ran the f32 products");
    assert!(worst < 0.05, "a word's probability moved by {worst}");
}

#[test]
fn the_cli_tags_and_evaluates_in_int8_with_any_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = random_model(d);
    let data = d.join("news.jsonl");
    std::fs::write(&data, common::corpus_jsonl(10)).unwrap();
    let tag = |batch: &str, out: &std::path::Path| {
        let o = newstag(&[
            "tag",
            "--model",
            s(&model),
            "--precision",
            "int8",
            "--batch-size",
            batch,
            "--out",
            s(out),
            s(&data),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out).unwrap()
    };
    let (b1, b32) = (
        tag("1", &d.join("b1.jsonl")),
        tag("32", &d.join("b32.jsonl")),
    );
    assert!(!b1.is_empty());
    assert_eq!(b1, b32, "batch size changed the int8 output");
    let o = newstag(&[
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--precision",
        "int8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("micro avg"));
}

#[test]
fn int8_runs_on_every_cpu_and_uses_a_vector_kernel_where_there_is_one() {
    // The portable kernel always runs; a CPU with AVX2 (or either VNNI) gets a fast kernel.
    let best = Int8Kernel::best();
    assert!(best.runs_here());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let vnni = (has!("avx512f") && has!("avx512vnni")) || (has!("avx2") && has!("avxvnni"));
        let avx2 = has!("avx2") && has!("fma");
        assert_eq!(best.is_fast(), vnni || avx2);
    }
    assert_eq!("int8".parse::<Precision>(), Ok(Precision::Int8));
    assert_eq!(Precision::Int8.to_string(), "int8");
}

#[test]
fn auto_picks_int8_then_bf16_then_f32_and_says_so() {
    use newstag::model::PrecisionChoice;
    assert_eq!("auto".parse::<PrecisionChoice>(), Ok(PrecisionChoice::Auto));
    assert_eq!(
        "int8".parse::<PrecisionChoice>(),
        Ok(PrecisionChoice::Exactly(Precision::Int8))
    );
    let err = "f16".parse::<PrecisionChoice>().unwrap_err();
    assert!(err.contains("expected auto, f32, bf16 or int8"), "{err}");
    assert_eq!(
        PrecisionChoice::Exactly(Precision::F32).resolve(&Device::Cpu, Family::Bert),
        (Precision::F32, None)
    );
    let (chosen, line) = PrecisionChoice::Auto.resolve(&Device::Cpu, Family::Bert);
    let want = if Int8Kernel::best().is_fast() {
        Precision::Int8
    } else if newstag::kernels::bf16::supported() {
        Precision::Bf16
    } else {
        Precision::F32
    };
    assert_eq!(chosen, want);
    let line = line.unwrap();
    assert!(
        line.starts_with(&format!("precision auto: {want} (")),
        "{line}"
    );

    // `tag` without --precision runs the automatic choice and says it once.
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(dir.path());
    let data = dir.path().join("news.jsonl");
    std::fs::write(&data, common::corpus_jsonl(3)).unwrap();
    let tag = |extra: &[&str]| {
        let mut args = vec!["tag", "--model", s(&model), s(&data)];
        args.extend(extra);
        let o = newstag(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let auto = tag(&[]);
    assert_eq!(
        stderr(&auto).matches("precision auto:").count(),
        1,
        "{}",
        stderr(&auto)
    );
    let explicit = tag(&["--precision", want.name()]);
    assert!(!stderr(&explicit).contains("precision auto"));
    assert_eq!(auto.stdout, explicit.stdout);
}
