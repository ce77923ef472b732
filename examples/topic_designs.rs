//! Compares topic poolings on one trained model's frozen passage states (issue 17): each design's
//! head is fitted on the training articles, its penalty and thresholds chosen on dev, and scored on
//! dev and on every `--eval` set, with recall per topic and on long articles (over 800 words).
//!
//!   cargo run --release --example topic_designs -- MODEL --train FILE[@TOPICS]... \
//!       --dev FILE[@TOPICS]... --eval NAME=FILE[@TOPICS]...
//!
//! `FILE@TOPICS` is a CoNLL file with its topics sidecar. Prints one Markdown table. With
//! `--save DIR`, also installs the head of the design best on dev (among those over the library's
//! passages), recalibrates the model's scores on dev and saves it to DIR.

use newstag::data::load::{read_all, AnnotatedFile};
use newstag::data::passages::passages;
use newstag::data::Article;
use newstag::eval::{best_thresholds, TopicScorer};
use newstag::infer::PassageState;
use newstag::model::topic_pooling::TopicPooling;
use newstag::model::NewsTagger;
use newstag::train::calibrate::calibrate;
use newstag::train::topic_head::{features, fit, micro_f1, Design, Features};
use std::path::PathBuf;

const PENALTIES: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];
const LONG_WORDS: usize = 800;

fn file(spec: &str) -> AnnotatedFile {
    match spec.split_once('@') {
        Some((p, t)) => AnnotatedFile::new(PathBuf::from(p), Some(PathBuf::from(t))),
        None => AnnotatedFile::new(PathBuf::from(spec), None),
    }
}

/// An article's passages merged per line (paragraph), weighted by sub-tokens.
fn paragraphs(article: &Article, states: &[PassageState]) -> Vec<PassageState> {
    let words = article.words();
    let mut out: Vec<PassageState> = Vec::new();
    for (i, (range, s)) in passages(article).iter().zip(states).enumerate() {
        let new_line = i == 0
            || article.text[words[range.start - 1].end..words[range.start].start].contains('\n');
        if new_line || out.is_empty() {
            out.push(PassageState {
                mean: vec![0.0; s.mean.len()],
                tokens: 0,
            });
        }
        let last = out.last_mut().unwrap();
        let total = (last.tokens + s.tokens).max(1) as f32;
        for (m, v) in last.mean.iter_mut().zip(&s.mean) {
            *m = (*m * last.tokens as f32 + v * s.tokens as f32) / total;
        }
        last.tokens += s.tokens;
    }
    out
}

struct Set {
    name: String,
    articles: Vec<Article>,
    features: Features,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = NewsTagger::load(args[0].as_ref(), &candle_core::Device::Cpu)?;
    let (mut train, mut dev, mut evals) = (Vec::new(), Vec::new(), Vec::new());
    let mut save = None;
    let mut it = args[1..].iter();
    while let (Some(flag), Some(value)) = (it.next(), it.next()) {
        match flag.as_str() {
            "--train" => train.push(file(value)),
            "--dev" => dev.push(file(value)),
            "--save" => save = Some(PathBuf::from(value)),
            "--eval" => {
                let (name, spec) = value.split_once('=').expect("--eval NAME=FILE");
                evals.push((name.to_string(), file(spec)));
            }
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    let load = |name: &str, files: &[AnnotatedFile]| -> anyhow::Result<Set> {
        let t = std::time::Instant::now();
        let articles: Vec<Article> = read_all(files, None, false)?
            .into_iter()
            .filter(|a| a.topics.is_some())
            .collect();
        let features = features(&model, &articles, 32)?;
        eprintln!(
            "{name}: {} articles, {:.0}s",
            articles.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(Set {
            name: name.into(),
            articles,
            features,
        })
    };
    let train = load("train", &train)?;
    let mut sets = vec![load("dev", &dev)?];
    for (name, f) in &evals {
        sets.push(load(name, std::slice::from_ref(f))?);
    }
    let topics = model.topics().to_vec();
    let designs: [(&str, Design, bool); 4] = [
        ("mean over the article (before)", Design::Mean, false),
        (
            "hard maximum over sentences (τ = 0.05)",
            Design::SmoothMax { fixed: Some(0.05) },
            false,
        ),
        (
            "smooth maximum over sentences (τ learned)",
            Design::SmoothMax { fixed: None },
            false,
        ),
        (
            "smooth maximum over paragraphs (τ learned)",
            Design::SmoothMax { fixed: None },
            true,
        ),
    ];
    let mut header = "| design |".to_string();
    for s in &sets {
        header += &format!(
            " {} micro-F1 | {} min recall | {} long F1 |",
            s.name, s.name, s.name
        );
    }
    println!("{header}");
    println!("|---|{}", "---:|".repeat(3 * sets.len()));
    let mut chosen = None;
    for (label, design, by_paragraph) in designs {
        let view = |s: &Set| -> Vec<Vec<PassageState>> {
            if by_paragraph {
                s.articles
                    .iter()
                    .zip(&s.features.passages)
                    .map(|(a, p)| paragraphs(a, p))
                    .collect()
            } else {
                s.features.passages.clone()
            }
        };
        let xt = view(&train);
        let xd = view(&sets[0]);
        let mut best = None;
        for penalty in PENALTIES {
            let fitted = fit(&xt, &train.features.gold, penalty, design)?;
            let p = fitted.probs(&xd);
            let th = best_thresholds(&p, &sets[0].features.gold);
            let f1 = micro_f1(&topics, &p, &sets[0].features.gold, &th);
            if best.as_ref().is_none_or(|(_, _, b)| f1 > *b) {
                best = Some((fitted, th, f1));
            }
        }
        let (fitted, th, dev_f1) = best.unwrap();
        let mut row = format!("| {label} |");
        for s in &sets {
            let p = fitted.probs(&view(s));
            let mut all = TopicScorer::new(&topics);
            let mut long = TopicScorer::new(&topics);
            for ((a, probs), gold) in s.articles.iter().zip(&p).zip(&s.features.gold) {
                let names = |b: Vec<bool>| -> Vec<String> {
                    topics
                        .iter()
                        .zip(b)
                        .filter(|x| x.1)
                        .map(|x| x.0.clone())
                        .collect()
                };
                let g = names(gold.clone());
                let q = names(probs.iter().zip(&th).map(|(p, t)| p >= t).collect());
                all.add(&g, &q);
                if a.text.split_whitespace().count() > LONG_WORDS {
                    long.add(&g, &q);
                }
            }
            let min_recall = all
                .per_label()
                .values()
                .filter(|c| c.tp + c.fn_ > 0)
                .map(|c| c.tp as f64 / (c.tp + c.fn_) as f64)
                .fold(1.0, f64::min);
            let long_f1 = if long.documents() > 0 {
                format!("{:.3} ({})", long.micro().f1, long.documents())
            } else {
                "-".into()
            };
            row += &format!(" {:.3} | {:.2} | {long_f1} |", all.micro().f1, min_recall);
        }
        if let TopicPooling::SmoothMax { temperature } = fitted.pooling() {
            row += &format!(" τ {temperature:.2?}");
        }
        println!("{row}");
        if !by_paragraph
            && chosen
                .as_ref()
                .is_none_or(|c: &(_, _, f64, &str)| dev_f1 > c.2)
        {
            chosen = Some((fitted, th, dev_f1, label));
        }
    }
    if let (Some(dir), Some((fitted, th, f1, label))) = (save, chosen) {
        anyhow::ensure!(
            !dir.exists(),
            "{}: exists; give a new directory",
            dir.display()
        );
        let mut model = model;
        fitted.install(&mut model)?;
        model.set_thresholds(th);
        calibrate(&mut model, &sets[0].articles, 32)?;
        model.save(&dir)?;
        eprintln!(
            "saved {} with \"{label}\" (dev topic micro-F1 {f1:.3})",
            dir.display()
        );
    }
    Ok(())
}
