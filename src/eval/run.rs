//! Running a system over annotated articles and scoring what it says: a newstag model
//! ([`evaluate`], [`score_model`]) or another system's predictions file ([`score_predictions`]).
//! Both become [`Compared`] articles, scored and analysed the same way.

use super::calibration::{Calibration, ReliabilityScorer};
use super::errors::ErrorAnalysis;
use super::metrics::{best_thresholds, EntityScorer, TopicScorer};
use super::report::{is_long, Report};
use crate::data::load::{found_labels, read_all, AnnotatedFile};
use crate::data::predictions::Predictions;
use crate::data::{problems_error, Article, Entity, Schema};
use crate::infer::{ArticlePrediction, Predictor, ScoredEntity};
use crate::model::NewsTagger;
use anyhow::Context;
use std::path::Path;

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
    let mut long_scorer = TopicScorer::new(topics);
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
            if is_long(a) {
                long_scorer.add(gold, &pred);
            }
            any_topics = true;
        }
    }
    Report::new(
        any_entities.then_some(&entities),
        any_topics.then_some(&topic_scorer),
        articles.len(),
    )
    .with_long_articles(&long_scorer)
    .with_calibration(Calibration {
        entities: entity_scores.reliability(),
        topics: topic_scores.reliability(),
    })
}

/// One annotated article and what a system predicted for it.
#[derive(Debug, Clone)]
pub struct Compared<'a> {
    pub article: &'a Article,
    /// Predicted entities, as whole words of the article.
    pub entities: Vec<ScoredEntity>,
    /// Predicted topics (those the system asserts, i.e. above its thresholds), with scores.
    pub topics: Vec<(String, f32)>,
}

impl Compared<'_> {
    /// The predicted entities without their scores.
    pub fn predicted_entities(&self) -> Vec<Entity> {
        self.entities.iter().map(|e| e.entity.clone()).collect()
    }
}

/// Scores compared articles as [`score`] scores a model's predictions: entities on articles
/// with entity annotations; topics (over `topic_labels`, when given) on articles with topic
/// annotations.
pub fn score_compared(items: &[Compared], topic_labels: Option<&[String]>) -> Report {
    let mut entities = EntityScorer::default();
    let mut topics = topic_labels.map(TopicScorer::new);
    let mut long = TopicScorer::new(topic_labels.unwrap_or_default());
    // Topic calibration needs a probability for every topic of every article; a predictions
    // file that lists only the topics it chose (as tag writes them) gets none.
    let (mut entity_scores, mut topic_scores) =
        (ReliabilityScorer::default(), ReliabilityScorer::default());
    let mut every_topic_scored = true;
    let (mut any_entities, mut any_topics) = (false, false);
    for item in items {
        if let Some(gold) = &item.article.entities {
            entities.add(gold, &item.predicted_entities());
            for e in &item.entities {
                entity_scores.add(e.score, gold.contains(&e.entity));
            }
            any_entities = true;
        }
        if let (Some(scorer), Some(gold)) = (&mut topics, &item.article.topics) {
            let pred: Vec<String> = item.topics.iter().map(|(t, _)| t.clone()).collect();
            scorer.add(gold, &pred);
            if is_long(item.article) {
                long.add(gold, &pred);
            }
            let labels = topic_labels.unwrap_or_default();
            every_topic_scored &= labels
                .iter()
                .all(|l| item.topics.iter().any(|(t, s)| t == l && s.is_finite()));
            for (t, score) in &item.topics {
                topic_scores.add(*score, gold.contains(t));
            }
            any_topics = true;
        }
    }
    Report::new(
        any_entities.then_some(&entities),
        topics.as_ref().filter(|_| any_topics),
        items.len(),
    )
    .with_long_articles(&long)
    .with_calibration(Calibration {
        entities: entity_scores.reliability(),
        topics: every_topic_scored
            .then(|| topic_scores.reliability())
            .flatten(),
    })
}

/// What `eval` scored: the report (with its error analysis) and the compared articles behind it.
pub struct Scored<'a> {
    pub report: Report,
    pub compared: Vec<Compared<'a>>,
    /// The topic labels scored (`None`: topics were not scored).
    pub topic_labels: Option<Vec<String>>,
}

impl<'a> Scored<'a> {
    /// The scored articles with the error analysis added to the report.
    fn analysed(
        mut report: Report,
        compared: Vec<Compared<'a>>,
        topic_labels: Option<Vec<String>>,
    ) -> Self {
        report.errors = Some(ErrorAnalysis::of(&compared, topic_labels.as_deref()));
        Scored {
            report,
            compared,
            topic_labels,
        }
    }
}

/// Tags `articles` with a model and scores them with its own topic thresholds.
pub fn score_model<'a>(
    predictor: &Predictor,
    articles: &'a [Article],
) -> anyhow::Result<Scored<'a>> {
    let model = predictor.model();
    let evaluation = evaluate(predictor, articles, false)?;
    let topics = model.topics();
    let compared = articles
        .iter()
        .zip(&evaluation.predictions)
        .map(|(article, p)| Compared {
            article,
            entities: p.entities.clone(),
            topics: p
                .topics_above(topics, model.thresholds())
                .into_iter()
                .map(|(t, s)| (t.to_string(), s))
                .collect(),
        })
        .collect();
    let topic_labels = (!topics.is_empty()).then(|| topics.to_vec());
    Ok(Scored::analysed(evaluation.report, compared, topic_labels))
}

/// Scores a predictions file read against `articles` (from `path`, named in messages). Invalid
/// lines and spans are an error, or with `skip_invalid` skipped with a warning; an article without
/// a prediction is always an error. Topics are scored only when the file has any.
pub fn score_predictions<'a>(
    path: &Path,
    articles: &'a [Article],
    predictions: Predictions,
    skip_invalid: bool,
) -> anyhow::Result<Scored<'a>> {
    let topic_labels = predictions
        .has_topics
        .then(|| predictions.topic_labels(articles));
    let Predictions {
        articles: predicted,
        mut problems,
        missing,
        ..
    } = predictions;
    if !problems.is_empty() && skip_invalid {
        eprintln!(
            "warning: skipped {} invalid prediction(s) (--skip-invalid); first: {}",
            problems.len(),
            problems[0]
        );
        problems.clear();
    }
    problems.extend(missing);
    if !problems.is_empty() {
        return Err(problems_error(&problems)).with_context(|| {
            format!(
                "{}: the predictions do not match the --data articles",
                path.display()
            )
        });
    }
    if topic_labels.is_none() {
        eprintln!("note: the predictions carry no \"topics\": topics are not scored");
    }
    let compared: Vec<Compared> = articles
        .iter()
        .zip(predicted)
        .map(|(article, p)| {
            let p = p.expect("every article has a prediction by now");
            Compared {
                article,
                entities: p
                    .entities
                    .into_iter()
                    .map(|(entity, score)| ScoredEntity { entity, score })
                    .collect(),
                topics: p.topics,
            }
        })
        .collect();
    let report = score_compared(&compared, topic_labels.as_deref());
    Ok(Scored::analysed(report, compared, topic_labels))
}

/// Reads the data for a model: entity types and topics outside the model's are problems. A model
/// without topics (a plain token classifier, such as one saved by transformers) predicts none, so
/// the data's topic annotations are set aside instead.
pub fn read_for_model(
    model: &NewsTagger,
    files: &[AnnotatedFile],
    skip_invalid: bool,
) -> anyhow::Result<Vec<Article>> {
    let types = model.tags.types();
    if !model.topics().is_empty() {
        let schema = Schema {
            entity_types: types,
            topics: model.topics().to_vec(),
        };
        return read_all(files, Some(&schema), skip_invalid);
    }
    let mut articles = read_all(files, None, skip_invalid)?;
    let (found, _) = found_labels(&articles);
    let unknown: Vec<&String> = found.iter().filter(|t| !types.contains(t)).collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "the data has entity type(s) {} that the model does not predict (it knows: {})",
        unknown
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        types.join(", ")
    );
    if articles.iter().any(|a| a.topics.is_some()) {
        eprintln!("note: the model predicts no topics: the data's topics are not scored");
        for a in &mut articles {
            a.topics = None;
        }
    }
    Ok(articles)
}

/// Warns about articles without entity annotations: their entities are not scored.
pub fn warn_unannotated(articles: &[Article]) {
    let unannotated = articles.iter().filter(|a| a.entities.is_none()).count();
    if unannotated > 0 {
        eprintln!(
            "warning: {unannotated} of {} --data article(s) carry no \"entities\": their entities are not scored{}",
            articles.len(),
            if unannotated == articles.len() {
                " (the report has no entity scores)"
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::errors::tests::{compared, labels, two_articles};
    use super::*;

    #[test]
    fn compared_articles_are_scored_strictly() {
        let (a, b) = two_articles();
        let items = compared(&a, &b);
        let topics = labels(&["energy", "trade"]);
        let report = score_compared(&items, Some(&topics));
        let e = report.entities.as_ref().unwrap();
        assert_eq!(e.per_type["PER"].support, 2);
        assert!((e.micro.precision - 2.0 / 5.0).abs() < 1e-12);
        assert!((e.micro.recall - 2.0 / 5.0).abs() < 1e-12);
        let t = report.topics.as_ref().unwrap();
        assert_eq!(t.per_label["trade"].support, 1);
        assert_eq!(t.per_label["trade"].precision, 0.0);
        assert!(report.errors.is_none(), "scoring alone does not analyse");
    }
}
