//! The evaluation [`Report`]: what the scorers found, as a plain-text table or JSON (`eval
//! --json`, and each dev evaluation in a run's `metrics.jsonl`), read back with serde.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::errors::ErrorAnalysis;
use super::metrics::{EntityScorer, Scores, TopicScorer};

/// Entity and topic results of one evaluation; a part is `None` when nothing was scored for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub entities: Option<EntityReport>,
    pub topics: Option<TopicReport>,
    /// Documents evaluated in all.
    pub documents: usize,
    /// Do the entity scores and topic probabilities mean what they say? (Absent from reports
    /// written before newstag measured it: read as nothing measured.)
    #[serde(default)]
    pub calibration: Calibration,
    /// What went wrong (`eval` adds it; the dev evaluations of training do not): the entity-type
    /// confusion matrix, boundary errors and the worst articles, as the `--html` page shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorAnalysis>,
}

/// Strict entity-level results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntityReport {
    pub micro: Prf,
    /// Mean over the types seen in gold or predictions; zeros when there are none.
    pub r#macro: Prf,
    pub per_type: BTreeMap<String, Scores>,
}

/// Multi-label topic results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicReport {
    pub micro: Prf,
    /// Mean over every label of the label set.
    pub r#macro: Prf,
    pub per_label: BTreeMap<String, Scores>,
    /// Documents that carried topic annotations.
    pub documents: usize,
    /// The same on the long articles alone (over [`LONG_ARTICLE_WORDS`] words), where a topic
    /// that one passage carries is easiest to miss; absent when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_articles: Option<Box<TopicReport>>,
}

/// Articles longer than this (white-space separated words) are also scored on their own.
pub const LONG_ARTICLE_WORDS: usize = 800;

/// Whether `article` counts as long for [`TopicReport::long_articles`].
pub fn is_long(article: &crate::data::Article) -> bool {
    article
        .text
        .split_whitespace()
        .nth(LONG_ARTICLE_WORDS)
        .is_some()
}

/// Precision, recall and F1 of an average.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl From<Scores> for Prf {
    fn from(s: Scores) -> Self {
        Prf {
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
        }
    }
}

impl Report {
    /// Collects the scorers' results; `documents` is the number of documents evaluated.
    pub fn new(
        entities: Option<&EntityScorer>,
        topics: Option<&TopicScorer>,
        documents: usize,
    ) -> Self {
        let entities = entities.map(|s| EntityReport {
            micro: s.micro().into(),
            r#macro: s.macro_avg().map_or(
                Prf {
                    precision: 0.0,
                    recall: 0.0,
                    f1: 0.0,
                },
                Prf::from,
            ),
            per_type: scores_of(s.per_type()),
        });
        let topics = topics.map(TopicReport::new);
        Report {
            entities,
            topics,
            documents,
            calibration: Calibration::default(),
            errors: None,
        }
    }

    /// The report with its topic results on long articles, scored by `long` (kept only when it
    /// scored any).
    pub fn with_long_articles(mut self, long: &TopicScorer) -> Self {
        if let Some(t) = &mut self.topics {
            t.long_articles = (long.documents() > 0).then(|| Box::new(TopicReport::new(long)));
        }
        self
    }

    /// The report with its calibration part.
    pub fn with_calibration(mut self, calibration: Calibration) -> Self {
        self.calibration = calibration;
        self
    }

    /// A plain-text table: per entity type precision/recall/F1/support, micro and macro averages;
    /// then the same for topics per label. Four decimals.
    pub fn table(&self) -> String {
        let mut out = format!("documents: {}\n", self.documents);
        if let Some(e) = &self.entities {
            out.push('\n');
            section(&mut out, "entity", &e.per_type, e.micro, e.r#macro);
        }
        if let Some(t) = &self.topics {
            out.push('\n');
            section(&mut out, "topic", &t.per_label, t.micro, t.r#macro);
            let _ = writeln!(out, "(topics scored on {} documents)", t.documents);
            if let Some(long) = &t.long_articles {
                let _ = writeln!(out, "\nlong articles (over {LONG_ARTICLE_WORDS} words):");
                section(&mut out, "topic", &long.per_label, long.micro, long.r#macro);
                let _ = writeln!(out, "(topics scored on {} long documents)", long.documents);
            }
        }
        let calibration = self.calibration.table();
        if !calibration.is_empty() {
            out.push('\n');
            out.push_str(&calibration);
        }
        out
    }
}

impl TopicReport {
    fn new(s: &TopicScorer) -> Self {
        TopicReport {
            micro: s.micro().into(),
            r#macro: s.macro_avg().into(),
            per_label: scores_of(s.per_label()),
            documents: s.documents(),
            long_articles: None,
        }
    }
}

fn scores_of(counts: BTreeMap<String, super::metrics::Counts>) -> BTreeMap<String, Scores> {
    counts.into_iter().map(|(k, c)| (k, c.scores())).collect()
}

/// One block of the table: a header, a row per class, and the two averages.
fn section(out: &mut String, title: &str, rows: &BTreeMap<String, Scores>, micro: Prf, mac: Prf) {
    const MICRO: &str = "micro avg";
    const MACRO: &str = "macro avg";
    let width = rows
        .keys()
        .map(|k| k.chars().count())
        .chain([title.len(), MICRO.len()])
        .max()
        .unwrap_or(0);
    let support: usize = rows.values().map(|s| s.support).sum();
    // `writeln!` into a String cannot fail.
    let _ = writeln!(
        out,
        "{title:<width$}  {:>9}  {:>9}  {:>9}  {:>9}",
        "precision", "recall", "f1", "support"
    );
    let mut row = |name: &str, p: f64, r: f64, f: f64, n: usize| {
        let _ = writeln!(out, "{name:<width$}  {p:>9.4}  {r:>9.4}  {f:>9.4}  {n:>9}");
    };
    for (name, s) in rows {
        row(name, s.precision, s.recall, s.f1, s.support);
    }
    row(MICRO, micro.precision, micro.recall, micro.f1, support);
    row(MACRO, mac.precision, mac.recall, mac.f1, support);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Entity;

    fn example() -> Report {
        let mut entities = EntityScorer::default();
        let per = |w: std::ops::Range<usize>| Entity {
            words: w,
            label: "PER".into(),
        };
        entities.add(&[per(0..2), per(3..4)], &[per(0..2)]);
        let labels = ["energy".to_string(), "trade".to_string()];
        let mut topics = TopicScorer::new(&labels);
        topics.add(&labels[..1], &labels[..1]);
        Report::new(Some(&entities), Some(&topics), 2)
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v = serde_json::to_value(example()).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&v), ["calibration", "documents", "entities", "topics"]);
        assert_eq!(keys(&v["entities"]), ["macro", "micro", "per_type"]);
        assert_eq!(keys(&v["entities"]["micro"]), ["f1", "precision", "recall"]);
        assert_eq!(
            keys(&v["entities"]["per_type"]["PER"]),
            ["f1", "precision", "recall", "support"]
        );
        assert_eq!(v["entities"]["per_type"]["PER"]["recall"], 0.5);
        assert_eq!(
            keys(&v["topics"]),
            ["documents", "macro", "micro", "per_label"]
        );
        assert_eq!(v["topics"]["documents"], 1);
        assert_eq!(v["topics"]["per_label"]["trade"]["support"], 0);

        let empty = Report::new(Some(&EntityScorer::default()), None, 0);
        let v = serde_json::to_value(empty).unwrap();
        assert!(v["topics"].is_null());
        assert_eq!(v["entities"]["macro"]["f1"], 0.0);
    }

    #[test]
    fn json_reads_back_as_the_report() {
        let report = example();
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        assert_eq!(back.table(), report.table());
        // With the long articles' part.
        let labels = ["energy".to_string(), "trade".to_string()];
        let mut long = TopicScorer::new(&labels);
        long.add(&labels[1..], &[]);
        let report = example().with_long_articles(&long);
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        let l = back.topics.unwrap().long_articles.unwrap();
        assert_eq!((l.documents, l.per_label["trade"].recall), (1, 0.0));
        assert!(report.table().contains("long articles (over 800 words):"));
        assert!(example()
            .with_long_articles(&TopicScorer::new(&labels))
            .topics
            .unwrap()
            .long_articles
            .is_none());
        // Reports from before calibration was measured still read.
        let mut old = serde_json::to_value(&report).unwrap();
        old.as_object_mut().unwrap().remove("calibration");
        let old: Report = serde_json::from_value(old).unwrap();
        assert!(old.calibration.entities.is_none() && old.errors.is_none());
    }

    #[test]
    fn table_lists_classes_and_averages() {
        let table = example().table();
        assert!(table.starts_with("documents: 2\n"), "{table}");
        assert!(
            table.contains("\nPER           1.0000     0.5000     0.6667          2\n"),
            "{table}"
        );
        assert!(table.contains("\ntrade         0.0000"), "{table}");
        assert_eq!(table.matches("macro avg").count(), 2, "{table}");
    }
}
