//! Running a model over annotated articles and scoring what it says.

use super::calibration::{Calibration, ReliabilityScorer};
use super::metrics::{best_thresholds, EntityScorer, TopicScorer};
use super::report::Report;
use crate::data::Article;
use crate::infer::{ArticlePrediction, Predictor};

/// A report, the topic thresholds it was scored with, and the predictions behind it.
pub struct Evaluation {
    pub report: Report,
    pub thresholds: Vec<f32>,
    pub predictions: Vec<ArticlePrediction>,
}

/// Tags `articles` with `predictor` and scores them. Only articles with entity annotations count for entities, only
/// those with topic annotations for topics. With `choose_thresholds`, each topic's threshold is the
/// one that maximises its F1 on these articles (as on dev during training); otherwise the model's.
pub fn evaluate(
    predictor: &Predictor,
    articles: &[Article],
    choose_thresholds: bool,
) -> anyhow::Result<Evaluation> {
    let model = predictor.model();
    let predictions = predictor.predict(articles)?;
    let topics = model.topics();
    let with_topics: Vec<usize> = (0..articles.len())
        .filter(|&i| articles[i].topics.is_some())
        .collect();
    let thresholds = if choose_thresholds && !with_topics.is_empty() && !topics.is_empty() {
        let probs: Vec<Vec<f32>> = with_topics
            .iter()
            .map(|&i| predictions[i].topic_probs.clone())
            .collect();
        let gold: Vec<Vec<bool>> = with_topics
            .iter()
            .map(|&i| {
                topics
                    .iter()
                    .map(|t| articles[i].topics.as_ref().unwrap().contains(t))
                    .collect()
            })
            .collect();
        best_thresholds(&probs, &gold)
    } else {
        model.thresholds().to_vec()
    };
    Ok(Evaluation {
        report: score(articles, &predictions, topics, &thresholds),
        thresholds,
        predictions,
    })
}

/// Scores predictions against the articles' annotations.
pub fn score(
    articles: &[Article],
    predictions: &[ArticlePrediction],
    topics: &[String],
    thresholds: &[f32],
) -> Report {
    let mut entities = EntityScorer::default();
    let mut topic_scorer = TopicScorer::new(topics);
    let (mut entity_scores, mut topic_scores) =
        (ReliabilityScorer::default(), ReliabilityScorer::default());
    let (mut any_entities, mut any_topics) = (false, false);
    for (a, p) in articles.iter().zip(predictions) {
        if let Some(gold) = &a.entities {
            let pred: Vec<_> = p.entities.iter().map(|e| e.entity.clone()).collect();
            entities.add(gold, &pred);
            for e in &p.entities {
                entity_scores.add(e.score, gold.contains(&e.entity));
            }
            any_entities = true;
        }
        if let (Some(gold), false) = (&a.topics, topics.is_empty()) {
            for (t, &prob) in topics.iter().zip(&p.topic_probs) {
                topic_scores.add(prob, gold.contains(t));
            }
            let pred: Vec<String> = p
                .topics_above(topics, thresholds)
                .into_iter()
                .map(|(t, _)| t.to_string())
                .collect();
            topic_scorer.add(gold, &pred);
            any_topics = true;
        }
    }
    Report::new(
        any_entities.then_some(&entities),
        any_topics.then_some(&topic_scorer),
        articles.len(),
    )
    .with_calibration(Calibration {
        entities: entity_scores.reliability(),
        topics: topic_scores.reliability(),
    })
}
