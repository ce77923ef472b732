//! How well do a model's article embeddings separate topics? Fits an L2-regularised logistic
//! regression on the training articles' embeddings and scores dev micro-F1 (thresholds tuned on dev,
//! as training does).
//!   cargo run --release --example topic_probe -- MODEL_DIR|--base BASE TRAIN.conll TRAIN_TOPICS DEV.conll DEV_TOPICS

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use newstag::data::load::{read_all, AnnotatedFile};
use newstag::eval::{best_thresholds, TopicScorer};
use newstag::infer::Predictor;
use newstag::model::config::WindowConfig;
use newstag::model::NewsTagger;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dev = Device::Cpu;
    let topics: Vec<String> = ["energy", "borders", "defense", "trade"]
        .map(String::from)
        .to_vec();
    let (model, rest) = if args[0] == "--base" {
        let types = ["PER", "ORG", "LOC", "MISC"].map(String::from);
        (
            NewsTagger::from_base(
                args[1].as_ref(),
                &types,
                &topics,
                WindowConfig::default(),
                0,
                &dev,
            )?,
            &args[2..],
        )
    } else {
        (NewsTagger::load(args[0].as_ref(), &dev)?, &args[1..])
    };
    let file = |p: &str, t: &str| AnnotatedFile {
        path: PathBuf::from(p),
        topics: Some(PathBuf::from(t)),
    };
    let train = read_all(&[file(&rest[0], &rest[1])], None, false)?;
    let devset = read_all(&[file(&rest[2], &rest[3])], None, false)?;
    let predictor = Predictor::new(&model, 32);
    let embed = |arts: &[newstag::data::Article]| -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(predictor
            .predict(arts)?
            .into_iter()
            .map(|p| p.embedding)
            .collect())
    };
    let t0 = std::time::Instant::now();
    let (xtr, xdv) = (embed(&train)?, embed(&devset)?);
    eprintln!(
        "embedded {} + {} articles in {:.0}s",
        xtr.len(),
        xdv.len(),
        t0.elapsed().as_secs_f64()
    );
    let targets = |arts: &[newstag::data::Article]| -> Vec<f32> {
        arts.iter()
            .flat_map(|a| {
                topics
                    .iter()
                    .map(|t| {
                        if a.topics.as_ref().unwrap().contains(t) {
                            1.0
                        } else {
                            0.0
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let h = xtr[0].len();
    let x = Tensor::from_vec(xtr.concat(), (xtr.len(), h), &dev)?;
    let y = Tensor::from_vec(targets(&train), (xtr.len(), 4), &dev)?;
    let xd = Tensor::from_vec(xdv.concat(), (xdv.len(), h), &dev)?;
    // Standardise features with train statistics.
    let mean = x.mean_keepdim(0)?;
    let std = (x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let xs = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let xds = xd.broadcast_sub(&mean)?.broadcast_div(&std)?;
    for l2 in [1e-4, 1e-3, 1e-2, 1e-1] {
        for pos_weight in [1.0f64, 4.0] {
            let w = Var::zeros((h, 4), candle_core::DType::F32, &dev)?;
            let b = Var::zeros(4, candle_core::DType::F32, &dev)?;
            let mut opt = AdamW::new(
                vec![w.clone(), b.clone()],
                ParamsAdamW {
                    lr: 0.01,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            )?;
            for _ in 0..400 {
                let logits = xs.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
                let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
                let neg = (logits.relu()? + &softplus)?; // -log(1-p)
                let pos = ((logits.neg()?.relu()?) + &softplus)?; // -log p
                let loss = ((&y * pos)? * pos_weight)?
                    .add(&((1.0 - &y)? * neg)?)?
                    .mean_all()?;
                let loss = (loss + (w.as_tensor().sqr()?.mean_all()? * l2)?)?;
                opt.backward_step(&loss)?;
            }
            let probs =
                candle_nn::ops::sigmoid(&xds.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?)?
                    .to_vec2::<f32>()?;
            let gold: Vec<Vec<bool>> = devset
                .iter()
                .map(|a| {
                    topics
                        .iter()
                        .map(|t| a.topics.as_ref().unwrap().contains(t))
                        .collect()
                })
                .collect();
            let th = best_thresholds(&probs, &gold);
            let mut scorer = TopicScorer::new(&topics);
            for (p, a) in probs.iter().zip(&devset) {
                let pred: Vec<String> = topics
                    .iter()
                    .zip(p)
                    .zip(&th)
                    .filter(|((_, &p), &t)| p >= t)
                    .map(|((t, _), _)| t.clone())
                    .collect();
                scorer.add(a.topics.as_ref().unwrap(), &pred);
            }
            let m = scorer.micro();
            println!(
                "l2 {l2:e} pos_weight {pos_weight}: dev micro P {:.3} R {:.3} F1 {:.3}",
                m.precision, m.recall, m.f1
            );
        }
    }
    Ok(())
}
