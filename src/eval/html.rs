//! The evaluation page (`newstag eval --html`) and the error analysis behind it.
//!
//! One self-contained HTML file (inline CSS, no scripts, no external assets): the score tables
//! (entities per type, micro and macro; topics per label), topic precision and recall per label as
//! bars, an entity-type confusion matrix over spans of the same extent (with `missed` and
//! `spurious`), boundary errors per type with examples, and the articles with the most errors, gold
//! and predicted side by side.
//!
//! The analysis works on [`Compared`] articles, which both a newstag model's predictions and another
//! system's (`eval --predictions`) become, so both are scored and shown the same way.

use super::calibration::{Calibration, ReliabilityScorer};
use super::metrics::{EntityScorer, Scores, TopicScorer};
use super::report::{Prf, Report};
use crate::data::{Article, CharOffsets, Entity};
use crate::infer::html::{open_mark, type_order, write_highlights, Esc, Highlight, CSS};
use crate::infer::ScoredEntity;
use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write};
use std::ops::Range;

/// Column of the confusion matrix for a gold span no predicted span has the extent of.
pub const MISSED: &str = "missed";
/// Row of the confusion matrix for a predicted span no gold span has the extent of.
pub const SPURIOUS: &str = "spurious";
/// How many of the worst articles the page shows.
pub const WORST_ARTICLES: usize = 20;
/// How many boundary-error examples the page lists per entity type.
pub const BOUNDARY_EXAMPLES: usize = 5;

/// One annotated article and what a system predicted for it.
#[derive(Debug, Clone)]
pub struct Compared<'a> {
    pub article: &'a Article,
    /// Predicted entities, as whole words of the article.
    pub entities: Vec<ScoredEntity>,
    /// Predicted topics (those the system asserts, i.e. above its thresholds), with scores.
    pub topics: Vec<(String, f32)>,
}

/// Scores compared articles as [`super::score`] scores a model's predictions: entities on articles
/// with entity annotations; topics (over `topic_labels`, when given) on articles with topic
/// annotations.
pub fn score_compared(items: &[Compared], topic_labels: Option<&[String]>) -> Report {
    let mut entities = EntityScorer::default();
    let mut topics = topic_labels.map(TopicScorer::new);
    // Topic calibration needs a probability for every topic of every article; a predictions
    // file that lists only the topics it chose (as tag writes them) gets none.
    let (mut entity_scores, mut topic_scores) =
        (ReliabilityScorer::default(), ReliabilityScorer::default());
    let mut every_topic_scored = true;
    let (mut any_entities, mut any_topics) = (false, false);
    for item in items {
        if let Some(gold) = &item.article.entities {
            entities.add(gold, &predicted_entities(item));
            for e in &item.entities {
                entity_scores.add(e.score, gold.contains(&e.entity));
            }
            any_entities = true;
        }
        if let (Some(scorer), Some(gold)) = (&mut topics, &item.article.topics) {
            let pred: Vec<String> = item.topics.iter().map(|(t, _)| t.clone()).collect();
            scorer.add(gold, &pred);
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
    .with_calibration(Calibration {
        entities: entity_scores.reliability(),
        topics: every_topic_scored
            .then(|| topic_scores.reliability())
            .flatten(),
    })
}

fn predicted_entities(item: &Compared) -> Vec<Entity> {
    item.entities.iter().map(|e| e.entity.clone()).collect()
}

/// Boundary errors of one entity type: gold spans with no exact match but an overlapping predicted
/// span of the same type and another extent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Boundary {
    pub count: usize,
    /// The first few, in article order.
    pub examples: Vec<BoundaryExample>,
}

/// One boundary error: the article, the gold span's text and the predicted span's text.
#[derive(Debug, Clone, PartialEq)]
pub struct BoundaryExample {
    pub id: String,
    pub gold: String,
    pub predicted: String,
}

/// Errors of one article, for ranking the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArticleErrors {
    /// Index into the compared articles.
    pub index: usize,
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

/// What went wrong, over all compared articles.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Entity types seen in gold or predictions of entity-annotated articles, standard ones first.
    pub types: Vec<String>,
    /// Counts by (gold type or [`SPURIOUS`], predicted type or [`MISSED`]) over spans of the same
    /// extent; the diagonal holds the exact matches.
    pub confusion: BTreeMap<(String, String), usize>,
    /// Boundary errors by entity type (types without any are absent).
    pub boundary: BTreeMap<String, Boundary>,
    /// Articles with at least one error, worst first: most entity errors, then most topic errors,
    /// then input order; at most [`WORST_ARTICLES`].
    pub worst: Vec<ArticleErrors>,
}

impl Analysis {
    /// Analyses compared articles; topic errors count only when `topic_labels` is given (and only
    /// for those labels).
    pub fn of(items: &[Compared], topic_labels: Option<&[String]>) -> Self {
        let mut types: Vec<String> = Vec::new();
        let mut confusion: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut boundary: BTreeMap<String, Boundary> = BTreeMap::new();
        let mut errors = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let a = item.article;
            let mut e = ArticleErrors {
                index,
                missed: 0,
                wrong: 0,
                topics: 0,
            };
            if let Some(gold) = &a.entities {
                let pred = predicted_entities(item);
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
                        g.label.clone()
                    } else {
                        e.missed += 1;
                        pred.iter()
                            .find(|p| p.words == g.words)
                            .map_or(MISSED.to_string(), |p| p.label.clone())
                    };
                    *confusion.entry((g.label.clone(), column)).or_default() += 1;
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
                        *confusion
                            .entry((SPURIOUS.to_string(), p.label.clone()))
                            .or_default() += 1;
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
        Analysis {
            types,
            confusion,
            boundary,
            worst: errors,
        }
    }

    /// A cell of the confusion matrix.
    pub fn cell(&self, gold: &str, predicted: &str) -> usize {
        self.confusion
            .get(&(gold.to_string(), predicted.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// What the evaluation page shows.
pub struct EvalPage<'a> {
    pub title: &'a str,
    /// Lines saying what was scored against what (model or predictions file, data files).
    pub about: &'a [String],
    pub report: &'a Report,
    pub items: &'a [Compared<'a>],
    /// The topic labels scored (`None`: topics were not scored).
    pub topic_labels: Option<&'a [String]>,
}

/// Style of the evaluation and run pages, on top of the tag page's [`CSS`].
pub const REPORT_CSS: &str = "\
body{max-width:76rem}
.reliability{display:flex;gap:1.5rem;flex-wrap:wrap}
.reliability figure{margin:0}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.25rem 0 .75rem}
th,td{border-bottom:1px solid #d0d7de;padding:.2rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #8c959f}
tr.avg td{font-weight:600;background:#f6f8fa}
.scroll{overflow-x:auto}
.meta{color:#57606a;margin:.2rem 0;overflow-wrap:anywhere}
.bars td.bar{width:14rem;text-align:left}
.bar span{display:block;height:.55rem;border-radius:3px;margin:.15rem 0}
.bar .p{background:#1d4ed8}.bar .r{background:#15803d}
.key{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;vertical-align:-.1rem}
table.matrix td{min-width:3.2rem}
table.matrix td.ok{background:#dcfce7}table.matrix td.bad{background:#fde2e1;font-weight:600}
table.matrix td.zero{color:#afb8c1}table.matrix td.na{background:#eef1f4}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.pair>div{min-width:0}
.pair h3{margin-top:.25rem}
mark.x{outline:2px dashed #cf222e;outline-offset:1px}
.chip.x{border-color:#cf222e;background:#fde2e1}
ul.examples{margin:.25rem 0;padding-left:1.4rem}
";

/// Renders the evaluation page; see the module documentation.
pub fn render_eval_page(page: &EvalPage) -> String {
    let mut out = String::new();
    write_eval_page(&mut out, page).expect("writing to a String cannot fail");
    out
}

/// `<!DOCTYPE html>` through `<body><h1>`: the shared style plus [`REPORT_CSS`].
pub fn write_head(out: &mut String, title: &str) -> fmt::Result {
    let title = Esc(title);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{CSS}{REPORT_CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )
}

fn write_eval_page(out: &mut String, page: &EvalPage) -> fmt::Result {
    write_head(out, page.title)?;
    for line in page.about {
        writeln!(out, "<p class=\"meta\">{}</p>", Esc(line))?;
    }
    let analysis = Analysis::of(page.items, page.topic_labels);
    out.push_str("<section>\n<h2>Scores</h2>\n");
    write_report_tables(out, page.report)?;
    out.push_str("</section>\n");
    super::reliability_page::write_reliability(out, &page.report.calibration)?;
    if let Some(t) = &page.report.topics {
        write_topic_bars(out, &t.per_label)?;
    }
    if page.report.entities.is_some() {
        write_confusion(out, &analysis)?;
        write_boundary(out, &analysis)?;
    }
    write_worst(out, page, &analysis)?;
    out.push_str("</body>\n</html>\n");
    Ok(())
}

/// The report as HTML tables: entities per type with micro and macro averages, then topics per
/// label (as [`Report::table`] prints them).
pub fn write_report_tables(out: &mut String, report: &Report) -> fmt::Result {
    writeln!(out, "<p>{} documents.</p>", report.documents)?;
    if let Some(e) = &report.entities {
        out.push_str("<h3>Entities (strict: exact span and type)</h3>\n");
        write_scores_table(out, "type", &e.per_type, e.micro, e.r#macro)?;
    }
    if let Some(t) = &report.topics {
        writeln!(
            out,
            "<h3>Topics</h3>\n<p class=\"meta\">scored on the {} documents with topic annotations</p>",
            t.documents
        )?;
        write_scores_table(out, "topic", &t.per_label, t.micro, t.r#macro)?;
    }
    if report.entities.is_none() && report.topics.is_none() {
        out.push_str(
            "<p>Nothing was scored: the data has no annotations the system predicts.</p>\n",
        );
    }
    Ok(())
}

fn write_scores_table(
    out: &mut String,
    title: &str,
    rows: &BTreeMap<String, Scores>,
    micro: Prf,
    mac: Prf,
) -> fmt::Result {
    writeln!(
        out,
        "<div class=\"scroll\"><table class=\"scores\">\n<thead><tr><th>{title}</th><th>precision</th>\
         <th>recall</th><th>F1</th><th>support</th></tr></thead>\n<tbody>"
    )?;
    let support: usize = rows.values().map(|s| s.support).sum();
    for (name, s) in rows {
        writeln!(
            out,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            Esc(name),
            s.precision,
            s.recall,
            s.f1,
            s.support
        )?;
    }
    for (name, p) in [("micro avg", micro), ("macro avg", mac)] {
        writeln!(
            out,
            "<tr class=\"avg\"><td>{name}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{support}</td></tr>",
            p.precision, p.recall, p.f1
        )?;
    }
    out.push_str("</tbody></table></div>\n");
    Ok(())
}

fn write_topic_bars(out: &mut String, per_label: &BTreeMap<String, Scores>) -> fmt::Result {
    out.push_str(
        "<section>\n<h2>Topic precision and recall</h2>\n<p class=\"meta\">\
         <span class=\"key\" style=\"background:#1d4ed8\"></span> precision \
         <span class=\"key\" style=\"background:#15803d\"></span> recall</p>\n\
         <table class=\"bars\">\n<thead><tr><th>topic</th><th>precision / recall</th>\
         <th>precision</th><th>recall</th><th>support</th></tr></thead>\n<tbody>\n",
    );
    for (name, s) in per_label {
        writeln!(
            out,
            "<tr><td>{}</td><td class=\"bar\"><span class=\"p\" style=\"width:{:.1}%\"></span>\
             <span class=\"r\" style=\"width:{:.1}%\"></span></td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            Esc(name),
            100.0 * s.precision,
            100.0 * s.recall,
            s.precision,
            s.recall,
            s.support
        )?;
    }
    out.push_str("</tbody></table>\n</section>\n");
    Ok(())
}

fn write_confusion(out: &mut String, a: &Analysis) -> fmt::Result {
    out.push_str(
        "<section>\n<h2>Entity-type confusion</h2>\n<p class=\"meta\">Gold spans (rows) against \
         predicted spans of the same extent (columns). <em>missed</em>: no predicted span has the \
         gold span's extent; <em>spurious</em>: no gold span has the predicted span's extent.</p>\n\
         <div class=\"scroll\"><table class=\"matrix\">\n<thead><tr><th>gold \\ predicted</th>",
    );
    for t in &a.types {
        write!(out, "<th>{}</th>", Esc(t))?;
    }
    writeln!(out, "<th>{MISSED}</th></tr></thead>\n<tbody>")?;
    let rows = a.types.iter().map(String::as_str).chain([SPURIOUS]);
    for row in rows {
        write!(out, "<tr><th>{}</th>", Esc(row))?;
        for col in a.types.iter().map(String::as_str).chain([MISSED]) {
            if row == SPURIOUS && col == MISSED {
                out.push_str("<td class=\"na\"></td>");
                continue;
            }
            let n = a.cell(row, col);
            let class = match (n, row == col) {
                (0, _) => "zero",
                (_, true) => "ok",
                _ => "bad",
            };
            write!(out, "<td class=\"{class}\">{n}</td>")?;
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n</section>\n");
    Ok(())
}

fn write_boundary(out: &mut String, a: &Analysis) -> fmt::Result {
    out.push_str(
        "<section>\n<h2>Boundary errors</h2>\n<p class=\"meta\">Gold spans predicted with the right \
         type but another, overlapping extent.</p>\n",
    );
    if a.boundary.is_empty() {
        out.push_str("<p>None.</p>\n</section>\n");
        return Ok(());
    }
    out.push_str(
        "<table>\n<thead><tr><th>type</th><th>errors</th><th style=\"text-align:left\">examples (gold → predicted)</th></tr>\
         </thead>\n<tbody>\n",
    );
    let mut types: Vec<&String> = a.boundary.keys().collect();
    types.sort_by(|x, y| type_order(x).cmp(&type_order(y)));
    for t in types {
        let b = &a.boundary[t];
        write!(out, "<tr><td>")?;
        open_mark(out, t, t)?;
        write!(
            out,
            "</mark></td><td>{}</td><td style=\"text-align:left\"><ul class=\"examples\">",
            b.count
        )?;
        for ex in &b.examples {
            write!(
                out,
                "<li>“{}” → “{}” <span class=\"n\">{}</span></li>",
                Esc(&ex.gold),
                Esc(&ex.predicted),
                Esc(&ex.id)
            )?;
        }
        out.push_str("</ul></td></tr>\n");
    }
    out.push_str("</tbody></table>\n</section>\n");
    Ok(())
}

fn write_worst(out: &mut String, page: &EvalPage, a: &Analysis) -> fmt::Result {
    writeln!(
        out,
        "<section>\n<h2>Articles with the most errors</h2>\n<p class=\"meta\">Up to {WORST_ARTICLES}, \
         by entity errors, then topic errors. A dashed outline marks a gold entity the system missed \
         (left) or a predicted entity that is not in gold (right).</p>"
    )?;
    if a.worst.is_empty() {
        out.push_str("<p>No article has an error.</p>\n");
    }
    out.push_str("</section>\n");
    for e in &a.worst {
        write_compared(out, &page.items[e.index], e, page.topic_labels.is_some())?;
    }
    Ok(())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_compared(
    out: &mut String,
    item: &Compared,
    e: &ArticleErrors,
    topics_scored: bool,
) -> fmt::Result {
    let a = item.article;
    writeln!(
        out,
        "<article>\n<h2>{}</h2>\n<p class=\"meta\">{}: {} missed, {} wrong; {}</p>",
        Esc(&a.id),
        plural(e.entities(), "entity error", "entity errors"),
        e.missed,
        e.wrong,
        plural(e.topics, "topic error", "topic errors"),
    )?;
    let gold_topics: Vec<&str> = a.topics.iter().flatten().map(String::as_str).collect();
    let pred_topics: Vec<&str> = item.topics.iter().map(|(t, _)| t.as_str()).collect();
    let chars = CharOffsets::new(&a.text);
    let span = |x: &Entity| {
        let b = a.entity_bytes(x);
        (chars.to_char(b.start), chars.to_char(b.end))
    };
    let pred = predicted_entities(item);
    let gold_marks: Vec<Highlight> = a
        .entities
        .iter()
        .flatten()
        .map(|g| {
            let hit = pred.contains(g);
            let (start, end) = span(g);
            Highlight {
                start,
                end,
                label: &g.label,
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
            let (start, end) = span(&p.entity);
            Highlight {
                start,
                end,
                label: &p.entity.label,
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
    out.push_str("<div class=\"pair\">\n<div>\n<h3>Gold</h3>\n");
    if a.topics.is_some() {
        write_topic_chips(out, &gold_topics, &pred_topics, None, topics_scored)?;
    }
    out.push_str("<div class=\"text\">");
    if a.entities.is_some() {
        write_highlights(out, &a.text, &gold_marks)?;
    } else {
        write!(out, "{}", Esc(&a.text))?;
    }
    out.push_str("</div>\n</div>\n<div>\n<h3>Predicted</h3>\n");
    if a.topics.is_some() || !item.topics.is_empty() {
        let scores: Vec<f32> = item.topics.iter().map(|(_, s)| *s).collect();
        let check = topics_scored && a.topics.is_some();
        write_topic_chips(out, &pred_topics, &gold_topics, Some(&scores), check)?;
    }
    out.push_str("<div class=\"text\">");
    write_highlights(out, &a.text, &pred_marks)?;
    out.push_str("</div>\n</div>\n</div>\n</article>\n");
    Ok(())
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
fn write_topic_chips(
    out: &mut String,
    topics: &[&str],
    other: &[&str],
    scores: Option<&[f32]>,
    check: bool,
) -> fmt::Result {
    if topics.is_empty() {
        out.push_str("<p class=\"meta\">no topics</p>\n");
        return Ok(());
    }
    out.push_str("<ul class=\"chips\">\n");
    for (i, t) in topics.iter().enumerate() {
        let x = if check && !other.contains(t) {
            " x"
        } else {
            ""
        };
        write!(out, "<li class=\"chip{x}\">{}", Esc(t))?;
        if let Some(s) = scores.and_then(|s| s.get(i)).filter(|s| s.is_finite()) {
            write!(out, " <span class=\"n\">{s:.2}</span>")?;
        }
        out.push_str("</li>\n");
    }
    out.push_str("</ul>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn article(text: &str, entities: &[(Range<usize>, &str)], topics: Option<&[&str]>) -> Article {
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

    fn scored(entities: &[(Range<usize>, &str)]) -> Vec<ScoredEntity> {
        entities
            .iter()
            .map(|(w, l)| ScoredEntity {
                entity: ent(w.clone(), l),
                score: 0.9,
            })
            .collect()
    }

    fn labels(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn confusion_boundary_and_worst() {
        // Words: Anna(0) Berg(1) met(2) Tokayev(3) in(4) New(5) York(6) and(7) Oslo(8) .(9)
        let a = article(
            "Anna Berg met Tokayev in New York and Oslo.",
            &[(0..2, "PER"), (3..4, "PER"), (5..7, "LOC"), (8..9, "LOC")],
            Some(&["energy"]),
        );
        let b = article("Gazprom said.", &[(0..1, "ORG")], Some(&["trade"]));
        let items = [
            Compared {
                article: &a,
                // Anna Berg right; Tokayev as ORG; New York cut to York (boundary); Oslo missed;
                // "met" spurious.
                entities: scored(&[(0..2, "PER"), (2..3, "MISC"), (3..4, "ORG"), (6..7, "LOC")]),
                topics: vec![("energy".into(), 0.8), ("trade".into(), 0.7)],
            },
            Compared {
                article: &b,
                entities: scored(&[(0..1, "ORG")]),
                topics: vec![],
            },
        ];
        let topics = labels(&["energy", "trade"]);
        let an = Analysis::of(&items, Some(&topics));
        assert_eq!(an.types, ["PER", "ORG", "LOC", "MISC"]);
        assert_eq!(an.cell("PER", "PER"), 1);
        assert_eq!(an.cell("PER", "ORG"), 1);
        assert_eq!(an.cell("LOC", MISSED), 2);
        assert_eq!(an.cell("ORG", "ORG"), 1);
        assert_eq!(an.cell(SPURIOUS, "MISC"), 1);
        assert_eq!(an.cell(SPURIOUS, "LOC"), 1);
        let total: usize = an.confusion.values().sum();
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

        let report = score_compared(&items, Some(&topics));
        let e = report.entities.as_ref().unwrap();
        assert_eq!(e.per_type["PER"].support, 2);
        assert!((e.micro.precision - 2.0 / 5.0).abs() < 1e-12);
        assert!((e.micro.recall - 2.0 / 5.0).abs() < 1e-12);
        let t = report.topics.as_ref().unwrap();
        assert_eq!(t.per_label["trade"].support, 1);
        assert_eq!(t.per_label["trade"].precision, 0.0);

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
        let an = Analysis::of(&items, None);
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
