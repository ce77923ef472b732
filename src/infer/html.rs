//! The page of tagged articles (`tag --html`, `tag --format html`, `serve`'s `format=html`), a
//! maud template: one self-contained file (see [`crate::page`]).
//!
//! The page has a legend of entity types, a summary (articles tagged and failed, articles per
//! topic, the most frequent entities of each type), then every article with its topic chips and
//! its text with entities highlighted by type and each topic's evidence (the sentence that
//! carried it) shaded and labelled with its topics.

use super::output::{OutputEntity, OutputRecord, OutputTopic};
use crate::page::{
    char_bounds, document, highlighted, mark, type_mark, type_order, Highlight, Style, KNOWN_TYPES,
};
use maud::{html, Markup};
use std::collections::{BTreeMap, HashMap};

/// One tagged article for the page: its text and what newstag said about it.
pub struct PageArticle<'a> {
    pub text: &'a str,
    pub record: &'a OutputRecord,
}

/// How many of the most frequent entities of each type the summary lists.
const TOP_ENTITIES: usize = 10;

/// What the summary says about a set of articles.
#[derive(Debug, PartialEq)]
struct Summary<'a> {
    tagged: usize,
    failed: usize,
    /// Articles per topic, most frequent first (ties by name).
    topics: Vec<(&'a str, usize)>,
    /// Per entity type (standard types first), its most frequent entity texts with counts.
    entities: Vec<(&'a str, Vec<(&'a str, usize)>)>,
}

impl<'a> Summary<'a> {
    fn of(articles: &[PageArticle<'a>]) -> Self {
        let (mut tagged, mut failed) = (0, 0);
        let mut topics: HashMap<&str, usize> = HashMap::new();
        let mut entities: BTreeMap<(usize, &str), HashMap<&str, usize>> = BTreeMap::new();
        for article in articles {
            match article.record {
                OutputRecord::Tagged {
                    entities: ents,
                    topics: tops,
                    ..
                } => {
                    tagged += 1;
                    for t in tops {
                        *topics.entry(&t.label).or_default() += 1;
                    }
                    for e in ents {
                        let counts = entities.entry(type_order(&e.label)).or_default();
                        *counts.entry(&e.text).or_default() += 1;
                    }
                }
                OutputRecord::Failed { .. } => failed += 1,
            }
        }
        Summary {
            tagged,
            failed,
            topics: most_frequent(topics, usize::MAX),
            entities: entities
                .into_iter()
                .map(|((_, label), counts)| (label, most_frequent(counts, TOP_ENTITIES)))
                .collect(),
        }
    }
}

/// The `n` largest counts, largest first, ties in name order.
fn most_frequent(counts: HashMap<&str, usize>, n: usize) -> Vec<(&str, usize)> {
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.truncate(n);
    counts
}

/// Renders the page; see the module documentation.
pub fn render_page(title: &str, articles: &[PageArticle]) -> String {
    let body = html! {
        (legend(articles))
        (summary(&Summary::of(articles)))
        @for article in articles {
            (article_view(article))
        }
    };
    document(title, Style::Plain, body)
}

/// The standard entity types, then any other type the articles use.
fn legend(articles: &[PageArticle]) -> Markup {
    let mut others: Vec<&str> = articles
        .iter()
        .filter_map(|a| match a.record {
            OutputRecord::Tagged { entities, .. } => Some(entities),
            OutputRecord::Failed { .. } => None,
        })
        .flatten()
        .map(|e| e.label.as_str())
        .filter(|l| !KNOWN_TYPES.iter().any(|(k, _, _)| k == l))
        .collect();
    others.sort_unstable();
    others.dedup();
    let entries = KNOWN_TYPES
        .iter()
        .map(|(label, description, _)| (*label, *description))
        .chain(others.into_iter().map(|l| (l, "")));
    html! {
        section class="legend" {
            h2 { "Entity types" }
            ul class="legend" {
                @for (label, description) in entries {
                    li { (mark(label, label, "", description)) }
                }
            }
        }
    }
}

fn summary(summary: &Summary) -> Markup {
    html! {
        section class="summary" {
            h2 { "Summary" }
            p {
                (summary.tagged) " article" (if summary.tagged == 1 { "" } else { "s" })
                " tagged, " (summary.failed) " failed."
            }
            h3 { "Articles per topic" }
            @if summary.topics.is_empty() {
                p { "No topics." }
            } @else {
                ul class="chips" {
                    @for (topic, n) in &summary.topics {
                        li class="chip" { (topic) " " span class="n" { (n) } }
                    }
                }
            }
            h3 { "Most frequent entities" }
            @if summary.entities.is_empty() {
                p { "No entities." }
            } @else {
                div class="types" {
                    @for (label, top) in &summary.entities {
                        div {
                            h3 { (type_mark(label)) }
                            ol {
                                @for (text, n) in top {
                                    li { (text) " " span class="n" { (n) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn article_view(article: &PageArticle) -> Markup {
    match article.record {
        OutputRecord::Tagged {
            id,
            entities,
            topics,
        } => html! {
            article {
                h2 { (id) }
                @if !topics.is_empty() {
                    ul class="chips" {
                        @for t in topics {
                            li class="chip" { (t.label) " " span class="n" { (format!("{:.2}", t.score)) } }
                        }
                    }
                }
                div class="text" { (with_evidence(article.text, entities, topics)) }
            }
        },
        OutputRecord::Failed { id, error } => html! {
            article class="failed" {
                h2 { (id) }
                p class="error" { "Not tagged: " (error) }
            }
        },
    }
}

/// `text` with its topics' evidence passages shaded (labelled with their topics) and the entities
/// highlighted inside and around them. An entity that crosses a passage's edge is left unmarked.
fn with_evidence(text: &str, entities: &[OutputEntity], topics: &[OutputTopic]) -> Markup {
    let mut passages: BTreeMap<(usize, usize), Vec<&str>> = BTreeMap::new();
    for t in topics {
        if let Some(e) = t.evidence {
            passages.entry((e.start, e.end)).or_default().push(&t.label);
        }
    }
    let bounds = char_bounds(text);
    let chars = bounds.len() - 1;
    // Pieces of the text in order: (start, end, topics of the passage or none).
    let mut pieces: Vec<(usize, usize, Option<String>)> = Vec::new();
    let mut at = 0;
    for ((start, end), labels) in passages {
        if start < at || end > chars || start >= end {
            continue;
        }
        pieces.push((at, start, None));
        pieces.push((start, end, Some(labels.join(", "))));
        at = end;
    }
    pieces.push((at, chars, None));
    html! {
        @for (start, end, labels) in pieces {
            @let inside: Vec<OutputEntity> = entities
                .iter()
                .filter(|e| e.span.start >= start && e.span.end <= end)
                .map(|e| {
                    let mut e = e.clone();
                    e.span.start -= start;
                    e.span.end -= start;
                    e
                })
                .collect();
            @let piece = &text[bounds[start]..bounds[end]];
            @match labels {
                Some(l) => span class="evidence" data-topics=(l) title={ "evidence: " (l) } {
                    (highlighted_entities(piece, &inside))
                },
                None => (highlighted_entities(piece, &inside)),
            }
        }
    }
}

/// `text` with each output entity highlighted, its score on hover (see [`highlighted`]).
pub fn highlighted_entities(text: &str, entities: &[OutputEntity]) -> Markup {
    let spans: Vec<Highlight> = entities
        .iter()
        .map(|e| Highlight {
            span: e.span.clone(),
            title: format!("{} {:.2}", e.label, e.score),
            class: "",
        })
        .collect();
    highlighted(text, &spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::output::OutputTopic;

    fn entity(start: usize, end: usize, label: &str, text: &str) -> OutputEntity {
        OutputEntity {
            span: crate::data::CharSpan {
                start,
                end,
                label: label.into(),
            },
            text: text.into(),
            score: 0.97,
        }
    }

    fn tagged(id: &str, entities: Vec<OutputEntity>, topics: &[&str]) -> OutputRecord {
        OutputRecord::Tagged {
            id: id.into(),
            entities,
            topics: topics
                .iter()
                .map(|t| OutputTopic {
                    label: t.to_string(),
                    score: 0.93,
                    evidence: None,
                })
                .collect(),
        }
    }

    fn highlighted(text: &str, entities: &[OutputEntity]) -> String {
        highlighted_entities(text, entities).into_string()
    }

    #[test]
    fn text_ids_and_titles_are_escaped() {
        let text = "<script>alert('x')</script> & \"more\"";
        let record = tagged(
            "<script>alert(1)</script>",
            vec![entity(0, 8, "<b>", "<script>")],
            &["<i>"],
        );
        let failed = OutputRecord::Failed {
            id: "<img src=x onerror=alert(1)>".into(),
            error: "bad <json>".into(),
        };
        let articles = [
            PageArticle {
                text,
                record: &record,
            },
            PageArticle {
                text: "",
                record: &failed,
            },
        ];
        let page = render_page("<title>", &articles);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"));
        assert!(!page.contains("<b>") && !page.contains("<i>"));
        assert!(page.contains("<h2>&lt;script&gt;alert(1)&lt;/script&gt;</h2>"));
        assert!(page.contains("&lt;/script&gt; &amp; &quot;more&quot;"));
        assert!(page.contains("data-label=\"&lt;b&gt;\""));
        assert!(page.contains("Not tagged: bad &lt;json&gt;"));
    }

    #[test]
    fn entities_are_marked_by_character_offsets() {
        // Characters: "Zoë 🎉 met " is 10, "Владимир Путин" 14, " in " 4, "Zürich" 6.
        let text = "Zoë 🎉 met Владимир Путин in Zürich.";
        let entities = [
            entity(28, 34, "LOC", "Zürich"),
            entity(0, 3, "PER", "Zoë"),
            entity(10, 24, "PER", "Владимир Путин"),
        ];
        let per = "<mark class=\"e\" data-label=\"PER\" title=\"PER 0.97\" \
                   style=\"--b:#fde2e1;--a:#b42318\">";
        let loc = "<mark class=\"e\" data-label=\"LOC\" title=\"LOC 0.97\" \
                   style=\"--b:#dcfce7;--a:#15803d\">";
        assert_eq!(
            highlighted(text, &entities),
            format!("{per}Zoë</mark> 🎉 met {per}Владимир Путин</mark> in {loc}Zürich</mark>.")
        );
    }

    #[test]
    fn evidence_is_shaded_with_its_topics_and_keeps_its_entities() {
        let text = "Gas deal\nZoë met Putin in Zürich.";
        let entities = [entity(9, 12, "PER", "Zoë"), entity(26, 32, "LOC", "Zürich")];
        let topic = |label: &str, start, end| OutputTopic {
            label: label.into(),
            score: 0.9,
            evidence: Some(super::super::output::Evidence { start, end }),
        };
        let page = with_evidence(
            text,
            &entities,
            &[topic("energy", 9, 33), topic("trade", 9, 33)],
        )
        .into_string();
        let open = "<span class=\"evidence\" data-topics=\"energy, trade\" \
                    title=\"evidence: energy, trade\">";
        assert!(
            page.starts_with(&format!("Gas deal\n{open}<mark")),
            "{page}"
        );
        assert!(
            page.contains(">Zoë</mark>") && page.contains(">Zürich</mark>.</span>"),
            "{page}"
        );
        // Without evidence the text is as before.
        assert_eq!(
            with_evidence(text, &entities, &[]).into_string(),
            highlighted(text, &entities)
        );
    }

    #[test]
    fn summary_counts_articles_topics_and_entities() {
        let a = tagged(
            "a",
            vec![
                entity(0, 1, "PER", "Merkel"),
                entity(0, 1, "ORG", "EU"),
                entity(0, 1, "PER", "Merkel"),
                entity(0, 1, "EVENT", "Olympics"),
            ],
            &["politics", "energy"],
        );
        let b = tagged("b", vec![entity(0, 1, "PER", "Abe")], &["energy"]);
        let c = OutputRecord::Failed {
            id: "c".into(),
            error: "empty".into(),
        };
        let many: Vec<OutputEntity> = (0..12)
            .map(|i| entity(0, 1, "LOC", &format!("place {i:02}")))
            .collect();
        let d = tagged("d", many, &[]);
        let articles: Vec<PageArticle> = [&a, &b, &c, &d]
            .into_iter()
            .map(|record| PageArticle { text: "x", record })
            .collect();
        let summary = Summary::of(&articles);
        assert_eq!((summary.tagged, summary.failed), (3, 1));
        assert_eq!(summary.topics, [("energy", 2), ("politics", 1)]);
        let labels: Vec<&str> = summary.entities.iter().map(|(l, _)| *l).collect();
        assert_eq!(labels, ["PER", "ORG", "LOC", "EVENT"]);
        assert_eq!(summary.entities[0].1, [("Merkel", 2), ("Abe", 1)]);
        assert_eq!(summary.entities[2].1.len(), TOP_ENTITIES);
        assert_eq!(summary.entities[2].1[0], ("place 00", 1));

        let page = render_page("News", &articles);
        assert!(page.contains("<p>3 articles tagged, 1 failed.</p>"));
        assert!(page.contains("energy <span class=\"n\">0.93</span>"));
        assert!(page.contains("data-label=\"EVENT\""));
    }
}
