//! Refitting the topic head on frozen passage states.
//!
//! During fine-tuning the topic head sees each article once per epoch, and on CoNLL-2003 most topics
//! have a few dozen positive articles: too few updates for the head to converge at the encoder's
//! learning rate. After training, the head is refitted on the final encoder's states (full batch,
//! many iterations; cheap next to an epoch) with the regularisation picked on dev when there is one:
//! an L2-regularised logistic regression on the passages' pooled logits, the pooling's temperature
//! learned with it (`model::topic_pooling`); for a model that pools by the mean, on the article
//! embeddings.

use crate::data::Article;
use crate::eval::{best_thresholds, TopicScorer};
use crate::infer::PassageState;
use crate::infer::Predictor;
use crate::model::calibration::sigmoid;
use crate::model::topic_pooling::{
    pool_passages, PassageGroups, TopicPooling, INITIAL_TEMPERATURE,
};
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

/// Each labelled article's passages, its topic targets `[topics]`, and the current head's
/// probabilities `[topics]`.
pub struct Features {
    pub passages: Vec<Vec<PassageState>>,
    pub gold: Vec<Vec<bool>>,
    pub current: Vec<Vec<f32>>,
}

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
pub fn features(
    model: &NewsTagger,
    articles: &[Article],
    batch: usize,
) -> anyhow::Result<Features> {
    let labelled: Vec<Article> = articles
        .iter()
        .filter(|a| a.topics.is_some())
        .cloned()
        .collect();
    let preds = Predictor::new(model, batch)?
        .keeping_passages()
        .predict(&labelled)?;
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
    Ok(Features {
        passages: preds.into_iter().map(|p| p.passages).collect(),
        gold,
        current,
    })
}

/// How a fit pools an article's passages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Design {
    /// The head on the article's mean state (one logistic regression per topic).
    Mean,
    /// The smooth maximum of the passages' logits; its temperature learned per topic, or fixed.
    SmoothMax { fixed: Option<f32> },
}

/// A fitted head and its pooling.
pub struct Fitted {
    head: Head,
    pooling: TopicPooling,
}

/// Temperatures a fit may learn: below, the pooling is a hard maximum in all but name; above, a
/// mean.
const TEMPERATURE_RANGE: (f32, f32) = (0.05, 20.0);

fn bools(y: &[Vec<bool>]) -> Vec<f32> {
    y.iter()
        .flatten()
        .map(|&b| if b { 1f32 } else { 0.0 })
        .collect()
}

/// An article's mean state from its passages' (the sub-token-weighted mean).
fn article_mean(passages: &[PassageState], hidden: usize) -> Vec<f32> {
    let total = passages.iter().map(|p| p.tokens).sum::<usize>().max(1) as f32;
    let mut out = vec![0f32; hidden];
    for p in passages {
        let w = p.tokens as f32 / total;
        for (o, v) in out.iter_mut().zip(&p.mean) {
            *o += w * v;
        }
    }
    out
}

/// Fits the head on standardised features, returned in the raw feature space.
pub fn fit(
    x: &[Vec<PassageState>],
    y: &[Vec<bool>],
    penalty: f64,
    design: Design,
) -> anyhow::Result<Fitted> {
    let dev = Device::Cpu;
    let hidden = x
        .iter()
        .flatten()
        .map(|p| p.mean.len())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no passage to fit the topic head on"))?;
    let (n, k) = (x.len(), y[0].len());
    let y = Tensor::from_vec(bools(y), (n, k), &dev)?;
    // Rows: the articles (mean) or every passage with sub-tokens (smooth maximum).
    let rows: Vec<Vec<f32>> = match design {
        Design::Mean => x.iter().map(|a| article_mean(a, hidden)).collect(),
        Design::SmoothMax { .. } => x
            .iter()
            .flatten()
            .filter(|p| p.tokens > 0)
            .map(|p| p.mean.clone())
            .collect(),
    };
    let m = rows.len();
    let xr = Tensor::from_vec(rows.concat(), (m, hidden), &dev)?;
    let mean = xr.mean_keepdim(0)?;
    let std = (xr.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let xs = xr.broadcast_sub(&mean)?.broadcast_div(&std)?;
    // For the smooth maximum: each article's passages as rows of `xs`.
    let groups = {
        let mut row = 0u32;
        let mut groups: Vec<Vec<(u32, usize)>> = Vec::with_capacity(n);
        for a in x {
            let mine: Vec<(u32, usize)> = a
                .iter()
                .filter(|p| p.tokens > 0)
                .map(|p| {
                    row += 1;
                    (row - 1, p.tokens)
                })
                .collect();
            groups.push(mine);
        }
        PassageGroups::new(&groups, m, &dev)?
    };
    let w = Var::zeros((hidden, k), DType::F32, &dev)?;
    let b = Var::zeros(k, DType::F32, &dev)?;
    let start = match design {
        Design::SmoothMax { fixed: Some(t) } => t,
        _ => INITIAL_TEMPERATURE,
    };
    let log_t = Var::from_vec(vec![start.ln(); k], k, &dev)?;
    let mut vars = vec![w.clone(), b.clone()];
    if design == (Design::SmoothMax { fixed: None }) {
        vars.push(log_t.clone());
    }
    let params = ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.0,
        ..Default::default()
    };
    let mut opt = AdamW::new(vars, params)?;
    let (lo, hi) = (TEMPERATURE_RANGE.0.ln(), TEMPERATURE_RANGE.1.ln());
    for _ in 0..400 {
        let z = xs.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        let logits = match design {
            Design::Mean => z,
            Design::SmoothMax { .. } => groups.pool(&z, &log_t.as_tensor().exp()?)?,
        };
        let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let positive = (&y * (&softplus - &logits)?)?;
        let negative = ((1.0 - &y)? * softplus)?;
        let loss = ((positive + negative)?.mean_all()?
            + (w.as_tensor().sqr()?.sum_all()? * (penalty / n as f64))?)?;
        opt.backward_step(&loss)?;
        log_t.set(&log_t.as_tensor().clamp(lo, hi)?)?;
    }
    // Undo the standardisation: w' = w / std, b' = b - sum(mean * w').
    let w_raw = w.as_tensor().broadcast_div(&std.t()?)?;
    let b_raw = (b.as_tensor() - mean.matmul(&w_raw)?.squeeze(0)?)?;
    let pooling = match design {
        Design::Mean => TopicPooling::Mean,
        Design::SmoothMax { .. } => TopicPooling::SmoothMax {
            temperature: log_t.as_tensor().exp()?.to_vec1()?,
        },
    };
    Ok(Fitted {
        head: Head {
            weight: w_raw.flatten_all()?.to_vec1()?,
            bias: b_raw.to_vec1()?,
        },
        pooling,
    })
}

impl Fitted {
    /// Whether every weight is a number (a fit on extreme states can overflow).
    pub fn is_finite(&self) -> bool {
        self.head.is_finite()
    }

    /// Topic probabilities `[articles][topics]` under this head and pooling.
    pub fn probs(&self, x: &[Vec<PassageState>]) -> Vec<Vec<f32>> {
        x.iter()
            .map(|passages| {
                let logits: Vec<f32> = match &self.pooling {
                    TopicPooling::Mean => {
                        let hidden = passages.first().map_or(0, |p| p.mean.len());
                        self.head.logits(&article_mean(passages, hidden))
                    }
                    TopicPooling::SmoothMax { temperature } => {
                        let kept: Vec<&PassageState> =
                            passages.iter().filter(|p| p.tokens > 0).collect();
                        let z: Vec<Vec<f32>> =
                            kept.iter().map(|p| self.head.logits(&p.mean)).collect();
                        let rows: Vec<&[f32]> = z.iter().map(Vec::as_slice).collect();
                        let tokens: Vec<usize> = kept.iter().map(|p| p.tokens).collect();
                        pool_passages(&rows, &tokens, temperature)
                    }
                };
                logits.into_iter().map(sigmoid).collect()
            })
            .collect()
    }

    /// The pooling fitted with the head.
    pub fn pooling(&self) -> &TopicPooling {
        &self.pooling
    }

    /// Puts the head and its pooling into `model`.
    pub fn install(&self, model: &mut NewsTagger) -> anyhow::Result<()> {
        model.set_topic_head(&self.head.weight, &self.head.bias)?;
        model.set_topic_pooling(self.pooling.clone());
        Ok(())
    }
}

impl Head {
    /// Whether every weight is a number (a fit on extreme embeddings can overflow).
    fn is_finite(&self) -> bool {
        self.weight.iter().chain(&self.bias).all(|v| v.is_finite())
    }
}

impl Head {
    /// Logits of one row of features.
    fn logits(&self, row: &[f32]) -> Vec<f32> {
        let k = self.bias.len();
        (0..k)
            .map(|j| {
                row.iter()
                    .enumerate()
                    .map(|(i, v)| v * self.weight[i * k + j])
                    .sum::<f32>()
                    + self.bias[j]
            })
            .collect()
    }
}

/// Topic micro-F1 of `probs` at `thresholds` against `gold`.
pub fn micro_f1(
    topics: &[String],
    probs: &[Vec<f32>],
    gold: &[Vec<bool>],
    thresholds: &[f32],
) -> f64 {
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
    let train = features(model, train, batch)?;
    let dev = features(model, dev, batch)?;
    // The designs tried for a passage-pooling model: the hardest maximum and a learned
    // temperature (docs/benchmarks.md: on dev and held out, neither wins everywhere).
    let designs: &[Design] = match model.topic_pooling() {
        TopicPooling::Mean => &[Design::Mean],
        TopicPooling::SmoothMax { .. } => &[
            Design::SmoothMax {
                fixed: Some(TEMPERATURE_RANGE.0),
            },
            Design::SmoothMax { fixed: None },
        ],
    };
    let topics = model.topics().to_vec();
    let (fitted, thresholds, score) = if dev.passages.is_empty() {
        let fitted = fit(&train.passages, &train.gold, DEFAULT_PENALTY, designs[0])?;
        if !fitted.is_finite() {
            // Nothing to compare with on dev: the jointly trained head stays.
            return Ok(None);
        }
        (fitted, vec![0.5; topics.len()], None)
    } else {
        let mut best: Option<(Fitted, Vec<f32>, f64)> = None;
        for (&design, penalty) in designs
            .iter()
            .flat_map(|d| PENALTIES.iter().map(move |&p| (d, p)))
        {
            let fitted = fit(&train.passages, &train.gold, penalty, design)?;
            if !fitted.is_finite() {
                continue;
            }
            let p = fitted.probs(&dev.passages);
            let th = best_thresholds(&p, &dev.gold);
            let f1 = micro_f1(&topics, &p, &dev.gold, &th);
            if best.as_ref().is_none_or(|b| f1 > b.2) {
                best = Some((fitted, th, f1));
            }
        }
        // Where topics are plentiful the jointly trained head can be the better one: keep it then.
        let current_th = best_thresholds(&dev.current, &dev.gold);
        let current_f1 = micro_f1(&topics, &dev.current, &dev.gold, &current_th);
        match best {
            Some((fitted, th, f1)) if f1 > current_f1 => (fitted, th, Some(f1)),
            _ => {
                model.set_thresholds(current_th);
                return Ok(Some(current_f1));
            }
        }
    };
    fitted.install(model)?;
    model.set_thresholds(thresholds);
    Ok(score)
}
