//! Refitting the topic head on frozen article embeddings.
//!
//! During fine-tuning the topic head sees each article once per epoch, and on CoNLL-2003 most topics
//! have a few dozen positive articles: too few updates for the head to converge at the encoder's
//! learning rate. After training, the head is refitted as an L2-regularised logistic regression on
//! the final encoder's article embeddings (full batch, many iterations; cheap next to an epoch), with
//! the regularisation picked on dev when there is one.

use crate::data::Article;
use crate::eval::{best_thresholds, TopicScorer};
use crate::infer::Predictor;
use crate::model::NewsTagger;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

const PENALTIES: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];
const DEFAULT_PENALTY: f64 = 1e-2;

/// A fitted head in the embedding space: `logits = x · weight + bias`, `weight` `[hidden, topics]`.
struct Head {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// Article embeddings `[n][hidden]`, topic targets `[n][topics]`, and the current head's
/// probabilities `[n][topics]`.
type Features = (Vec<Vec<f32>>, Vec<Vec<bool>>, Vec<Vec<f32>>);

/// An article whose embedding under the model holds a NaN or an infinity: the encoder's weights
/// are no longer usable, and a fit on them would never give a usable head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonFiniteEmbedding {
    pub article: String,
}

impl std::fmt::Display for NonFiniteEmbedding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the embedding of article {:?} is not finite",
            self.article
        )
    }
}

impl std::error::Error for NonFiniteEmbedding {}

/// The features of the articles that carry topics.
fn features(model: &NewsTagger, articles: &[Article], batch: usize) -> anyhow::Result<Features> {
    let labelled: Vec<Article> = articles
        .iter()
        .filter(|a| a.topics.is_some())
        .cloned()
        .collect();
    let preds = Predictor::new(model, batch)?.predict(&labelled)?;
    for (a, p) in labelled.iter().zip(&preds) {
        if !p
            .embedding
            .iter()
            .chain(&p.topic_probs)
            .all(|v| v.is_finite())
        {
            return Err(NonFiniteEmbedding {
                article: a.id.clone(),
            }
            .into());
        }
    }
    let gold = labelled
        .iter()
        .map(|a| {
            model
                .topics()
                .iter()
                .map(|t| a.topics.as_ref().is_some_and(|g| g.contains(t)))
                .collect()
        })
        .collect();
    let current = preds.iter().map(|p| p.topic_probs.clone()).collect();
    Ok((
        preds.into_iter().map(|p| p.embedding).collect(),
        gold,
        current,
    ))
}

/// Fits logistic regression on standardised features, returned in the raw feature space.
fn fit(x: &[Vec<f32>], y: &[Vec<bool>], penalty: f64) -> anyhow::Result<Head> {
    let dev = Device::Cpu;
    let (n, h, k) = (x.len(), x[0].len(), y[0].len());
    let x = Tensor::from_vec(x.concat(), (n, h), &dev)?;
    let y = Tensor::from_vec(
        y.iter()
            .flatten()
            .map(|&b| if b { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        (n, k),
        &dev,
    )?;
    let mean = x.mean_keepdim(0)?;
    let std = (x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let xs = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
    let w = Var::zeros((h, k), DType::F32, &dev)?;
    let b = Var::zeros(k, DType::F32, &dev)?;
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(vec![w.clone(), b.clone()], params)?;
    for _ in 0..400 {
        let logits = xs.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let positive = (&y * (&softplus - &logits)?)?;
        let negative = ((1.0 - &y)? * softplus)?;
        let loss = ((positive + negative)?.mean_all()?
            + (w.as_tensor().sqr()?.sum_all()? * (penalty / n as f64))?)?;
        opt.backward_step(&loss)?;
    }
    // Undo the standardisation: w' = w / std, b' = b - sum(mean * w').
    let w_raw = w.as_tensor().broadcast_div(&std.t()?)?;
    let b_raw = (b.as_tensor() - mean.matmul(&w_raw)?.squeeze(0)?)?;
    Ok(Head {
        weight: w_raw.flatten_all()?.to_vec1()?,
        bias: b_raw.to_vec1()?,
    })
}

impl Head {
    /// Whether every weight is a number (a fit on extreme embeddings can overflow).
    fn is_finite(&self) -> bool {
        self.weight.iter().chain(&self.bias).all(|v| v.is_finite())
    }
}

fn probs(head: &Head, x: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let k = head.bias.len();
    x.iter()
        .map(|row| {
            (0..k)
                .map(|j| {
                    let z: f32 = row
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v * head.weight[i * k + j])
                        .sum::<f32>()
                        + head.bias[j];
                    1.0 / (1.0 + (-z).exp())
                })
                .collect()
        })
        .collect()
}

fn micro_f1(topics: &[String], probs: &[Vec<f32>], gold: &[Vec<bool>], thresholds: &[f32]) -> f64 {
    let mut scorer = TopicScorer::new(topics);
    let names = |row: Vec<bool>| -> Vec<String> {
        topics
            .iter()
            .zip(row)
            .filter(|(_, b)| *b)
            .map(|(t, _)| t.clone())
            .collect()
    };
    for (p, g) in probs.iter().zip(gold) {
        scorer.add(
            &names(g.clone()),
            &names(p.iter().zip(thresholds).map(|(p, t)| p >= t).collect()),
        );
    }
    scorer.micro().f1
}

/// Refits the topic head of `model` on `train` (choosing the penalty and thresholds on `dev` when it
/// has topic annotations, and keeping the current head when it scores at least as well there);
/// returns the dev topic micro-F1 of the head kept, if scored.
pub fn refit(
    model: &mut NewsTagger,
    train: &[Article],
    dev: &[Article],
    batch: usize,
) -> anyhow::Result<Option<f64>> {
    if model.topics().is_empty() || !train.iter().any(|a| a.topics.is_some()) {
        return Ok(None);
    }
    let (xt, yt, _) = features(model, train, batch)?;
    let (xd, yd, current) = features(model, dev, batch)?;
    let topics = model.topics().to_vec();
    let (head, thresholds, score) = if xd.is_empty() {
        let head = fit(&xt, &yt, DEFAULT_PENALTY)?;
        if !head.is_finite() {
            // Nothing to compare with on dev: the jointly trained head stays.
            return Ok(None);
        }
        (head, vec![0.5; topics.len()], None)
    } else {
        let mut best: Option<(Head, Vec<f32>, f64)> = None;
        for penalty in PENALTIES {
            let head = fit(&xt, &yt, penalty)?;
            if !head.is_finite() {
                continue;
            }
            let p = probs(&head, &xd);
            let th = best_thresholds(&p, &yd);
            let f1 = micro_f1(&topics, &p, &yd, &th);
            if best.as_ref().is_none_or(|b| f1 > b.2) {
                best = Some((head, th, f1));
            }
        }
        // Where topics are plentiful the jointly trained head can be the better one: keep it then.
        let current_th = best_thresholds(&current, &yd);
        let current_f1 = micro_f1(&topics, &current, &yd, &current_th);
        match best {
            Some((head, th, f1)) if f1 > current_f1 => (head, th, Some(f1)),
            _ => {
                model.set_thresholds(current_th);
                return Ok(Some(current_f1));
            }
        }
    };
    model.set_topic_head(&head.weight, &head.bias)?;
    model.set_thresholds(thresholds);
    Ok(score)
}
