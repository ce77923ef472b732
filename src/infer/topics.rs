//! An article's topic scores from its passages' hidden states, and the passage that carried each.

use crate::model::bert::Mode;
use crate::model::topic_pooling::{pool_passages, TopicPooling};
use crate::model::NewsTagger;
use candle_core::Tensor;

/// One passage's mean hidden state and its number of sub-tokens (the topic refit's input).
#[derive(Debug, Clone, PartialEq)]
pub struct PassageState {
    pub mean: Vec<f32>,
    pub tokens: usize,
}

/// What the topic head makes of one article.
#[derive(Debug, Clone)]
pub struct ArticleTopics {
    /// The mean hidden state over all the article's sub-tokens.
    pub embedding: Vec<f32>,
    /// The pooled topic logits, in model order (empty for a model without topics).
    pub logits: Vec<f32>,
    /// For each topic, the passage (index into the article's passages) the head scores highest.
    pub evidence: Vec<Option<usize>>,
    /// Every passage's state, in order (kept only when asked for).
    pub passages: Vec<PassageState>,
}

/// Reads topics from each article's passage sums `(sum of hidden states, sub-tokens)`, in passage
/// order. Each row goes through the head on its own, so an article's scores do not depend on
/// the other articles.
pub fn read_topics(
    model: &NewsTagger,
    passage_sums: Vec<Vec<(Vec<f32>, usize)>>,
    hidden: usize,
    keep_passages: bool,
) -> anyhow::Result<Vec<ArticleTopics>> {
    let k = model.topics().len();
    let mut out: Vec<ArticleTopics> = passage_sums
        .iter()
        .map(|passages| {
            let mut sum = vec![0f32; hidden];
            for (s, _) in passages {
                for (a, v) in sum.iter_mut().zip(s) {
                    *a += v;
                }
            }
            let count = passages.iter().map(|p| p.1).sum::<usize>().max(1) as f32;
            ArticleTopics {
                embedding: sum.into_iter().map(|v| v / count).collect(),
                logits: Vec::new(),
                evidence: vec![None; k],
                passages: Vec::new(),
            }
        })
        .collect();
    if k == 0 || out.is_empty() {
        return Ok(out);
    }
    // Every passage with sub-tokens, as (article, passage index, state).
    let mut states: Vec<(usize, usize, PassageState)> = Vec::new();
    for (a, passages) in passage_sums.into_iter().enumerate() {
        for (p, (sum, tokens)) in passages.into_iter().enumerate() {
            if tokens > 0 {
                let mean = sum.into_iter().map(|v| v / tokens as f32).collect();
                states.push((a, p, PassageState { mean, tokens }));
            }
        }
    }
    let dev = model.device();
    let head = |rows: Vec<f32>, n: usize| -> anyhow::Result<Vec<Vec<f32>>> {
        let x = Tensor::from_vec(rows, (n, hidden), dev)?;
        Ok(model
            .topic_logits(&x, &mut Mode::Infer)?
            .map(|z| z.to_vec2::<f32>())
            .transpose()?
            .unwrap_or_default())
    };
    let passage_logits = if states.is_empty() {
        Vec::new()
    } else {
        let rows: Vec<f32> = states.iter().flat_map(|s| s.2.mean.clone()).collect();
        head(rows, states.len())?
    };
    let mut per_article: Vec<Vec<(usize, &[f32], usize)>> = vec![Vec::new(); out.len()];
    for ((a, p, state), z) in states.iter().zip(&passage_logits) {
        per_article[*a].push((*p, z.as_slice(), state.tokens));
    }
    match model.topic_pooling() {
        TopicPooling::Mean => {
            let rows: Vec<f32> = out.iter().flat_map(|t| t.embedding.clone()).collect();
            let n = out.len();
            for (t, z) in out.iter_mut().zip(head(rows, n)?) {
                t.logits = z;
            }
        }
        TopicPooling::SmoothMax { temperature } => {
            for (t, passages) in out.iter_mut().zip(&per_article) {
                let logits: Vec<&[f32]> = passages.iter().map(|p| p.1).collect();
                let tokens: Vec<usize> = passages.iter().map(|p| p.2).collect();
                t.logits = pool_passages(&logits, &tokens, temperature);
            }
        }
    }
    for (t, passages) in out.iter_mut().zip(&per_article) {
        for (j, e) in t.evidence.iter_mut().enumerate() {
            *e = passages
                .iter()
                .max_by(|x, y| x.1[j].total_cmp(&y.1[j]))
                .map(|p| p.0);
        }
    }
    if keep_passages {
        for (a, p, state) in states {
            let article = &mut out[a];
            // Passages without sub-tokens keep a place, so indices stay the article's.
            while article.passages.len() < p {
                article.passages.push(PassageState {
                    mean: vec![0.0; hidden],
                    tokens: 0,
                });
            }
            article.passages.push(state);
        }
    }
    Ok(out)
}
