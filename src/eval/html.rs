//! The evaluation page (`newstag eval --html`), a maud template.
//!
//! One self-contained HTML file (see [`crate::page`]): the score tables (entities per type, micro
//! and macro; topics per label), the reliability diagrams, topic precision and recall per label as
//! bars, and the error analysis of [`super::errors`]: the entity-type confusion matrix, boundary
//! errors per type with examples, and the articles with the most errors, gold and predicted side
//! by side.

use super::errors::{ArticleErrors, ErrorAnalysis, MISSED, SPURIOUS, WORST_ARTICLES};
use super::metrics::Scores;
use super::report::{Prf, Report};
use super::run::Compared;
use crate::data::CharOffsets;
use crate::fsutil::write_atomic;
use crate::page::{document, highlighted, type_mark, type_order, Highlight, Style};
use maud::{html, Markup};
use std::collections::BTreeMap;
use std::path::Path;

/// What the evaluation page shows.
pub struct EvalPage<'a> {
    pub title: &'a str,
    /// Lines saying what was scored against what (model or predictions file, data files).
    pub about: &'a [String],
    /// The report; its error analysis is computed from `items` when it has none.
    pub report: &'a Report,
    pub items: &'a [Compared<'a>],
    /// The topic labels scored (`None`: topics were not scored).
    pub topic_labels: Option<&'a [String]>,
}

/// Renders the evaluation page; see the module documentation.
pub fn render_eval_page(page: &EvalPage) -> String {
    let computed;
    let analysis = match &page.report.errors {
        Some(a) => a,
        None => {
            computed = ErrorAnalysis::of(page.items, page.topic_labels);
            &computed
        }
    };
    let report = page.report;
    let body = html! {
        @for line in page.about {
            p class="meta" { (line) }
        }
        section {
            h2 { "Scores" }
            (report_tables(report))
        }
        (super::reliability_page::reliability(&report.calibration))
        @if let Some(t) = &report.topics {
            (topic_bars(&t.per_label))
        }
        @if report.entities.is_some() {
            (confusion(analysis))
            (boundary(analysis))
        }
        (worst(page, analysis))
    };
    document(page.title, Style::Report, body)
}

/// Writes the page of scored articles to `path` (atomically).
pub fn write_eval_page(
    path: &Path,
    scored: &super::Scored,
    about: &[String],
) -> anyhow::Result<()> {
    let page = render_eval_page(&EvalPage {
        title: "newstag: evaluation",
        about,
        report: &scored.report,
        items: &scored.compared,
        topic_labels: scored.topic_labels.as_deref(),
    });
    write_atomic(path, page.as_bytes())
}

/// The report as HTML tables: entities per type with micro and macro averages, then topics per
/// label (as [`Report::table`] prints them).
pub fn report_tables(report: &Report) -> Markup {
    html! {
        p { (report.documents) " documents." }
        @if let Some(e) = &report.entities {
            h3 { "Entities (strict: exact span and type)" }
            (scores_table("type", &e.per_type, e.micro, e.r#macro))
        }
        @if let Some(t) = &report.topics {
            h3 { "Topics" }
            p class="meta" { "scored on the " (t.documents) " documents with topic annotations" }
            (scores_table("topic", &t.per_label, t.micro, t.r#macro))
        }
        @if report.entities.is_none() && report.topics.is_none() {
            p { "Nothing was scored: the data has no annotations the system predicts." }
        }
    }
}

/// Four decimals, as the tables show scores.
fn dec4(x: f64) -> String {
    format!("{x:.4}")
}

fn scores_table(title: &str, rows: &BTreeMap<String, Scores>, micro: Prf, mac: Prf) -> Markup {
    let support: usize = rows.values().map(|s| s.support).sum();
    html! {
        div class="scroll" {
            table class="scores" {
                thead { tr {
                    th { (title) } th { "precision" } th { "recall" } th { "F1" } th { "support" }
                } }
                tbody {
                    @for (name, s) in rows {
                        tr {
                            td { (name) } td { (dec4(s.precision)) } td { (dec4(s.recall)) }
                            td { (dec4(s.f1)) } td { (s.support) }
                        }
                    }
                    @for (name, p) in [("micro avg", micro), ("macro avg", mac)] {
                        tr class="avg" {
                            td { (name) } td { (dec4(p.precision)) } td { (dec4(p.recall)) }
                            td { (dec4(p.f1)) } td { (support) }
                        }
                    }
                }
            }
        }
    }
}

fn topic_bars(per_label: &BTreeMap<String, Scores>) -> Markup {
    html! {
        section {
            h2 { "Topic precision and recall" }
            p class="meta" {
                span class="key" style="background:#1d4ed8" {} " precision "
                span class="key" style="background:#15803d" {} " recall"
            }
            table class="bars" {
                thead { tr {
                    th { "topic" } th { "precision / recall" } th { "precision" } th { "recall" }
                    th { "support" }
                } }
                tbody {
                    @for (name, s) in per_label {
                        tr {
                            td { (name) }
                            td class="bar" {
                                span class="p" style=(format!("width:{:.1}%", 100.0 * s.precision)) {}
                                span class="r" style=(format!("width:{:.1}%", 100.0 * s.recall)) {}
                            }
                            td { (dec4(s.precision)) } td { (dec4(s.recall)) } td { (s.support) }
                        }
                    }
                }
            }
        }
    }
}

fn confusion(a: &ErrorAnalysis) -> Markup {
    let rows = a.types.iter().map(String::as_str).chain([SPURIOUS]);
    let columns: Vec<&str> = a.types.iter().map(String::as_str).chain([MISSED]).collect();
    html! {
        section {
            h2 { "Entity-type confusion" }
            p class="meta" {
                "Gold spans (rows) against predicted spans of the same extent (columns). "
                em { (MISSED) } ": no predicted span has the gold span's extent; "
                em { (SPURIOUS) } ": no gold span has the predicted span's extent."
            }
            div class="scroll" {
                table class="matrix" {
                    thead { tr {
                        th { "gold \\ predicted" }
                        @for t in &columns { th { (t) } }
                    } }
                    tbody {
                        @for row in rows {
                            tr {
                                th { (row) }
                                @for col in &columns {
                                    @if row == SPURIOUS && *col == MISSED {
                                        td class="na" {}
                                    } @else {
                                        @let n = a.cell(row, col);
                                        @let class = match (n, row == *col) {
                                            (0, _) => "zero",
                                            (_, true) => "ok",
                                            _ => "bad",
                                        };
                                        td class=(class) { (n) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn boundary(a: &ErrorAnalysis) -> Markup {
    let mut types: Vec<&String> = a.boundary.keys().collect();
    types.sort_by(|x, y| type_order(x).cmp(&type_order(y)));
    html! {
        section {
            h2 { "Boundary errors" }
            p class="meta" { "Gold spans predicted with the right type but another, overlapping extent." }
            @if a.boundary.is_empty() {
                p { "None." }
            } @else {
                table {
                    thead { tr {
                        th { "type" } th { "errors" }
                        th style="text-align:left" { "examples (gold → predicted)" }
                    } }
                    tbody {
                        @for t in types {
                            @let b = &a.boundary[t];
                            tr {
                                td { (type_mark(t)) }
                                td { (b.count) }
                                td style="text-align:left" {
                                    ul class="examples" {
                                        @for ex in &b.examples {
                                            li {
                                                "“" (ex.gold) "” → “" (ex.predicted) "” "
                                                span class="n" { (ex.id) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn worst(page: &EvalPage, a: &ErrorAnalysis) -> Markup {
    html! {
        section {
            h2 { "Articles with the most errors" }
            p class="meta" {
                "Up to " (WORST_ARTICLES) ", by entity errors, then topic errors. A dashed outline \
                 marks a gold entity the system missed (left) or a predicted entity that is not in \
                 gold (right)."
            }
            @if a.worst.is_empty() {
                p { "No article has an error." }
            }
        }
        @for e in &a.worst {
            @if let Some(item) = page.items.get(e.index) {
                (compared(item, e, page.topic_labels.is_some()))
            }
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn compared(item: &Compared, e: &ArticleErrors, topics_scored: bool) -> Markup {
    let a = item.article;
    let gold_topics: Vec<&str> = a.topics.iter().flatten().map(String::as_str).collect();
    let pred_topics: Vec<&str> = item.topics.iter().map(|(t, _)| t.as_str()).collect();
    let chars = CharOffsets::new(&a.text);
    let pred = item.predicted_entities();
    let gold_marks: Vec<Highlight> = a
        .entities
        .iter()
        .flatten()
        .map(|g| {
            let hit = pred.contains(g);
            Highlight {
                span: a.char_span(&chars, g),
                title: format!("{}{}", g.label, if hit { "" } else { " (missed)" }),
                class: if hit { "" } else { "x" },
            }
        })
        .collect();
    let pred_marks: Vec<Highlight> = item
        .entities
        .iter()
        .map(|p| {
            let hit = a.entities.as_ref().is_none_or(|g| g.contains(&p.entity));
            Highlight {
                span: a.char_span(&chars, &p.entity),
                title: format!(
                    "{}{}{}",
                    p.entity.label,
                    score_text(p.score),
                    if hit { "" } else { " (not in gold)" }
                ),
                class: if hit { "" } else { "x" },
            }
        })
        .collect();
    let scores: Vec<f32> = item.topics.iter().map(|(_, s)| *s).collect();
    html! {
        article {
            h2 { (a.id) }
            p class="meta" {
                (plural(e.entities(), "entity error", "entity errors")) ": " (e.missed) " missed, "
                (e.wrong) " wrong; " (plural(e.topics, "topic error", "topic errors"))
            }
            div class="pair" {
                div {
                    h3 { "Gold" }
                    @if a.topics.is_some() {
                        (topic_chips(&gold_topics, &pred_topics, None, topics_scored))
                    }
                    div class="text" {
                        @if a.entities.is_some() {
                            (highlighted(&a.text, &gold_marks))
                        } @else {
                            (a.text)
                        }
                    }
                }
                div {
                    h3 { "Predicted" }
                    @if a.topics.is_some() || !item.topics.is_empty() {
                        (topic_chips(&pred_topics, &gold_topics, Some(&scores), topics_scored && a.topics.is_some()))
                    }
                    div class="text" { (highlighted(&a.text, &pred_marks)) }
                }
            }
        }
    }
}

/// " 0.93", or nothing for a system that gives no score (NaN).
fn score_text(score: f32) -> String {
    if score.is_finite() {
        format!(" {score:.2}")
    } else {
        String::new()
    }
}

/// Topic chips; with `check`, those absent from `other` are marked as errors.
fn topic_chips(topics: &[&str], other: &[&str], scores: Option<&[f32]>, check: bool) -> Markup {
    html! {
        @if topics.is_empty() {
            p class="meta" { "no topics" }
        } @else {
            ul class="chips" {
                @for (i, t) in topics.iter().enumerate() {
                    li class=(if check && !other.contains(t) { "chip x" } else { "chip" }) {
                        (t)
                        @if let Some(s) = scores.and_then(|s| s.get(i)).filter(|s| s.is_finite()) {
                            " " span class="n" { (format!("{s:.2}")) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::errors::tests::{compared, labels, two_articles};
    use super::super::run::score_compared;
    use super::*;

    #[test]
    fn the_page_shows_scores_and_errors_escaped() {
        let (a, b) = two_articles();
        let items = compared(&a, &b);
        let topics = labels(&["energy", "trade"]);
        let report = score_compared(&items, Some(&topics));
        let page = render_eval_page(&EvalPage {
            title: "eval <test>",
            about: &["model: <m>".to_string()],
            report: &report,
            items: &items,
            topic_labels: Some(&topics),
        });
        assert!(page.contains("<title>eval &lt;test&gt;</title>"));
        assert!(page.contains("model: &lt;m&gt;"));
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
        assert!(
            page.contains("<th>spurious</th><td class=\"zero\">0</td>"),
            "{page}"
        );
        assert!(page.contains("“New York” → “York”"));
        assert!(page.contains("title=\"LOC (missed)\""));
        assert!(page.contains("class=\"e x\" data-label=\"MISC\""));
        assert!(page.contains("<li class=\"chip x\">trade <span class=\"n\">0.70</span>"));
        assert_eq!(page.matches("<article>").count(), 2);

        // The analysis a report carries is the one shown.
        let mut with_errors = report.clone();
        let mut analysis = ErrorAnalysis::of(&items, Some(&topics));
        analysis.worst.truncate(1);
        with_errors.errors = Some(analysis);
        let page = render_eval_page(&EvalPage {
            report: &with_errors,
            title: "t",
            about: &[],
            items: &items,
            topic_labels: Some(&topics),
        });
        assert_eq!(page.matches("<article>").count(), 1);
    }
}
