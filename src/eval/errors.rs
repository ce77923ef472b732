//! What went wrong, beyond the scores: an entity-type confusion matrix over spans of the same
//! extent (with `missed` and `spurious`), boundary errors per type with examples, and the articles
//! with the most errors. `eval` puts it in the JSON report (`errors`) and shows it on the `--html`
//! page; both read it from here.
//!
//! The analysis works on [`Compared`] articles, which both a newstag model's predictions and another
//! system's (`eval --predictions`) become, so both are analysed the same way.

use super::run::Compared;
use crate::data::Entity;
use crate::page::type_order;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

/// Column of the confusion matrix for a gold span no predicted span has the extent of.
pub const MISSED: &str = "missed";
/// Row of the confusion matrix for a predicted span no gold span has the extent of.
pub const SPURIOUS: &str = "spurious";
/// How many of the worst articles the analysis keeps.
pub const WORST_ARTICLES: usize = 20;
/// How many boundary-error examples the analysis keeps per entity type.
pub const BOUNDARY_EXAMPLES: usize = 5;

/// Boundary errors of one entity type: gold spans with no exact match but an overlapping predicted
/// span of the same type and another extent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Boundary {
    pub count: usize,
    /// The first few, in article order.
    pub examples: Vec<BoundaryExample>,
}

/// One boundary error: the article, the gold span's text and the predicted span's text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundaryExample {
    pub id: String,
    pub gold: String,
    pub predicted: String,
}

/// Errors of one article, for ranking the worst.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleErrors {
    /// Position of the article among those evaluated (from 0, in the order read).
    pub index: usize,
    pub id: String,
    /// Gold entities not predicted exactly (extent and type).
    pub missed: usize,
    /// Predicted entities not in gold exactly.
    pub wrong: usize,
    /// Topics predicted but not gold, or gold but not predicted.
    pub topics: usize,
}

impl ArticleErrors {
    pub fn entities(&self) -> usize {
        self.missed + self.wrong
    }
}

/// What went wrong, over all compared articles (the `errors` of a JSON report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnalysis {
    /// Entity types seen in gold or predictions of entity-annotated articles, standard ones first.
    pub types: Vec<String>,
    /// Counts by gold type (or [`SPURIOUS`]), then predicted type (or [`MISSED`]), over spans of
    /// the same extent; the diagonal holds the exact matches. Cells that are zero are absent.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Boundary errors by entity type (types without any are absent).
    pub boundary: BTreeMap<String, Boundary>,
    /// Articles with at least one error, worst first: most entity errors, then most topic errors,
    /// then input order; at most [`WORST_ARTICLES`].
    pub worst: Vec<ArticleErrors>,
}

impl ErrorAnalysis {
    /// Analyses compared articles; topic errors count only when `topic_labels` is given (and only
    /// for those labels).
    pub fn of(items: &[Compared], topic_labels: Option<&[String]>) -> Self {
        let mut types: Vec<String> = Vec::new();
        let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut count = |gold: &str, predicted: &str| {
            *confusion
                .entry(gold.to_string())
                .or_default()
                .entry(predicted.to_string())
                .or_default() += 1;
        };
        let mut boundary: BTreeMap<String, Boundary> = BTreeMap::new();
        let mut errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let a = item.article;
            let mut e = ArticleErrors {
                index,
                id: a.id.clone(),
                missed: 0,
                wrong: 0,
                topics: 0,
            };
            if let Some(gold) = &a.entities {
                let pred = item.predicted_entities();
                let gold_set: HashSet<&Entity> = gold.iter().collect();
                let pred_set: HashSet<&Entity> = pred.iter().collect();
                for x in gold_set.iter().chain(&pred_set) {
                    if !types.contains(&x.label) {
                        types.push(x.label.clone());
                    }
                }
                // Gold spans in order, so examples come in article order.
                let mut gold_sorted: Vec<&Entity> = gold_set.iter().copied().collect();
                gold_sorted.sort_by_key(|g| (g.words.start, g.words.end, g.label.clone()));
                for g in gold_sorted {
                    let exact = pred_set.contains(g);
                    let column = if exact {
                        g.label.as_str()
                    } else {
                        e.missed += 1;
                        pred.iter()
                            .find(|p| p.words == g.words)
                            .map_or(MISSED, |p| p.label.as_str())
                    };
                    count(&g.label, column);
                    if exact {
                        continue;
                    }
                    let overlapping = pred.iter().find(|p| {
                        p.label == g.label && p.words != g.words && overlaps(&p.words, &g.words)
                    });
                    if let Some(p) = overlapping {
                        let b = boundary.entry(g.label.clone()).or_default();
                        b.count += 1;
                        if b.examples.len() < BOUNDARY_EXAMPLES {
                            b.examples.push(BoundaryExample {
                                id: a.id.clone(),
                                gold: a.text[a.entity_bytes(g)].to_string(),
                                predicted: a.text[a.entity_bytes(p)].to_string(),
                            });
                        }
                    }
                }
                for p in &pred_set {
                    if !gold_set.contains(*p) {
                        e.wrong += 1;
                    }
                    if !gold_set.iter().any(|g| g.words == p.words) {
                        count(SPURIOUS, &p.label);
                    }
                }
            }
            if let (Some(labels), Some(gold)) = (topic_labels, &a.topics) {
                e.topics = labels
                    .iter()
                    .filter(|l| gold.contains(l) != item.topics.iter().any(|(t, _)| t == *l))
                    .count();
            }
            if e.entities() + e.topics > 0 {
                errors.push(e);
            }
        }
        types.sort_by(|a, b| type_order(a).cmp(&type_order(b)));
        errors.sort_by(|a, b| {
            b.entities()
                .cmp(&a.entities())
                .then(b.topics.cmp(&a.topics))
                .then(a.index.cmp(&b.index))
        });
        errors.truncate(WORST_ARTICLES);
        ErrorAnalysis {
            types,
            confusion,
            boundary,
            worst: errors,
        }
    }

    /// A cell of the confusion matrix.
    pub fn cell(&self, gold: &str, predicted: &str) -> usize {
        self.confusion
            .get(gold)
            .and_then(|row| row.get(predicted))
            .copied()
            .unwrap_or(0)
    }
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::Article;
    use crate::infer::ScoredEntity;

    pub fn article(
        text: &str,
        entities: &[(Range<usize>, &str)],
        topics: Option<&[&str]>,
    ) -> Article {
        let mut a = Article::from_text("a", text);
        a.entities = Some(entities.iter().map(|(w, l)| ent(w.clone(), l)).collect());
        a.topics = topics.map(|t| t.iter().map(|s| s.to_string()).collect());
        a
    }

    fn ent(words: Range<usize>, label: &str) -> Entity {
        Entity {
            words,
            label: label.into(),
        }
    }

    pub fn scored(entities: &[(Range<usize>, &str)]) -> Vec<ScoredEntity> {
        entities
            .iter()
            .map(|(w, l)| ScoredEntity {
                entity: ent(w.clone(), l),
                score: 0.9,
            })
            .collect()
    }

    pub fn labels(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// Two articles: the first with one error of every kind, the second with a missed topic.
    pub fn two_articles() -> (Article, Article) {
        // Words: Anna(0) Berg(1) met(2) Tokayev(3) in(4) New(5) York(6) and(7) Oslo(8) .(9)
        let a = article(
            "Anna Berg met Tokayev in New York and Oslo.",
            &[(0..2, "PER"), (3..4, "PER"), (5..7, "LOC"), (8..9, "LOC")],
            Some(&["energy"]),
        );
        let mut b = article("Gazprom said.", &[(0..1, "ORG")], Some(&["trade"]));
        b.id = "b".into();
        (a, b)
    }

    pub fn compared<'a>(a: &'a Article, b: &'a Article) -> [Compared<'a>; 2] {
        [
            Compared {
                article: a,
                // Anna Berg right; Tokayev as ORG; New York cut to York (boundary); Oslo missed;
                // "met" spurious.
                entities: scored(&[(0..2, "PER"), (2..3, "MISC"), (3..4, "ORG"), (6..7, "LOC")]),
                topics: vec![("energy".into(), 0.8), ("trade".into(), 0.7)],
            },
            Compared {
                article: b,
                entities: scored(&[(0..1, "ORG")]),
                topics: vec![],
            },
        ]
    }

    #[test]
    fn confusion_boundary_and_worst() {
        let (a, b) = two_articles();
        let items = compared(&a, &b);
        let topics = labels(&["energy", "trade"]);
        let an = ErrorAnalysis::of(&items, Some(&topics));
        assert_eq!(an.types, ["PER", "ORG", "LOC", "MISC"]);
        assert_eq!(an.cell("PER", "PER"), 1);
        assert_eq!(an.cell("PER", "ORG"), 1);
        assert_eq!(an.cell("LOC", MISSED), 2);
        assert_eq!(an.cell("ORG", "ORG"), 1);
        assert_eq!(an.cell(SPURIOUS, "MISC"), 1);
        assert_eq!(an.cell(SPURIOUS, "LOC"), 1);
        let total: usize = an.confusion.values().flat_map(|row| row.values()).sum();
        assert_eq!(
            total,
            5 + 2,
            "5 gold spans, 2 predicted spans of no gold extent"
        );
        assert_eq!(an.boundary.len(), 1);
        assert_eq!(an.boundary["LOC"].count, 1);
        assert_eq!(
            an.boundary["LOC"].examples[0],
            BoundaryExample {
                id: "a".into(),
                gold: "New York".into(),
                predicted: "York".into()
            }
        );
        // a: missed Tokayev, New York, Oslo (3); wrong met, Tokayev/ORG, York (3); topics: trade.
        // b: entities right, topic trade missed.
        assert_eq!(an.worst.len(), 2);
        assert_eq!(
            (an.worst[0].index, an.worst[0].missed, an.worst[0].wrong),
            (0, 3, 3)
        );
        assert_eq!((an.worst[0].topics, an.worst[1].topics), (1, 1));
        assert_eq!(an.worst[1].entities(), 0);
        assert_eq!(an.worst[1].id, "b");

        // The JSON report's "errors", and back.
        let v = serde_json::to_value(&an).unwrap();
        assert_eq!(v["confusion"]["PER"]["ORG"], 1);
        assert_eq!(v["confusion"][SPURIOUS]["MISC"], 1);
        assert_eq!(v["boundary"]["LOC"]["examples"][0]["gold"], "New York");
        assert_eq!(v["worst"][0]["id"], "a");
        assert_eq!(serde_json::from_value::<ErrorAnalysis>(v).unwrap(), an);
    }

    #[test]
    fn worst_is_capped_and_perfect_articles_are_left_out() {
        let arts: Vec<Article> = (0..40)
            .map(|i| {
                let mut a = article("Anna met Berg.", &[(0..1, "PER")], None);
                a.id = format!("a{i}");
                a
            })
            .collect();
        // i % 3: 0 right, 1 one spurious entity (1 error), 2 the wrong span (2 errors).
        let items: Vec<Compared> = arts
            .iter()
            .enumerate()
            .map(|(i, a)| Compared {
                article: a,
                entities: match i % 3 {
                    0 => scored(&[(0..1, "PER")]),
                    1 => scored(&[(0..1, "PER"), (2..3, "PER")]),
                    _ => scored(&[(2..3, "PER")]),
                },
                topics: vec![],
            })
            .collect();
        let an = ErrorAnalysis::of(&items, None);
        assert_eq!(an.worst.len(), WORST_ARTICLES);
        let errors: Vec<usize> = an.worst.iter().map(ArticleErrors::entities).collect();
        assert_eq!(errors[..13], [2; 13]);
        assert_eq!(errors[13..], [1; 7]);
        assert_eq!(
            an.worst.iter().map(|e| e.index).take(3).collect::<Vec<_>>(),
            [2, 5, 8]
        );
        assert!(an.worst.iter().all(|e| e.index % 3 != 0));
    }
}
