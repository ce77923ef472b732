//! A self-contained HTML page of tagged articles: inline CSS, no scripts, no external assets.
//!
//! The page has a legend of entity types, a summary (articles tagged and failed, articles per
//! topic, the most frequent entities of each type), then every article with its topic chips and
//! its text with entities highlighted by type.

use super::output::{OutputEntity, OutputRecord};
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write};

/// One tagged article for the page: its text and what newstag said about it.
pub struct PageArticle<'a> {
    pub text: &'a str,
    pub record: &'a OutputRecord,
}

/// How many of the most frequent entities of each type the summary lists.
const TOP_ENTITIES: usize = 10;

/// Colours of an entity type: a light background for the text, a dark accent for its label
/// (white label text on the accent has a contrast ratio of at least 4.5).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Colour {
    background: &'static str,
    accent: &'static str,
}

const fn colour(background: &'static str, accent: &'static str) -> Colour {
    Colour { background, accent }
}

/// The standard entity types, in legend order, with a description and fixed colours.
const KNOWN_TYPES: [(&str, &str, Colour); 4] = [
    ("PER", "person", colour("#fde2e1", "#b42318")),
    ("ORG", "organisation", colour("#dbeafe", "#1d4ed8")),
    ("LOC", "location", colour("#dcfce7", "#15803d")),
    ("MISC", "miscellaneous", colour("#fef3c7", "#a15c07")),
];

/// Colours for other entity types, picked by a hash of the type.
const PALETTE: [Colour; 4] = [
    colour("#f3e8ff", "#7e22ce"),
    colour("#ccfbf1", "#0f766e"),
    colour("#fce7f3", "#be185d"),
    colour("#e2e8f0", "#475569"),
];

/// The colours of an entity type: fixed for the standard types, from [`PALETTE`] by a stable
/// (FNV-1a) hash for the others.
fn type_colour(label: &str) -> Colour {
    if let Some((_, _, c)) = KNOWN_TYPES.iter().find(|(l, _, _)| *l == label) {
        return *c;
    }
    let hash = label.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// The dark accent colour of an entity type (as on the pages), for charts.
pub fn type_accent(label: &str) -> &'static str {
    type_colour(label).accent
}

/// Sort key putting the standard types first, in legend order, then the others alphabetically.
pub fn type_order(label: &str) -> (usize, &str) {
    let rank = KNOWN_TYPES.iter().position(|(l, _, _)| *l == label);
    (rank.unwrap_or(KNOWN_TYPES.len()), label)
}

/// Displays a string HTML-escaped, safe both in text and in quoted attribute values.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

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
    let mut out = String::new();
    write_page(&mut out, title, articles).expect("writing to a String cannot fail");
    out
}

/// The page style, shared by newstag's other pages (`eval --html`, a run's `index.html`).
pub const CSS: &str = "\
body{font:16px/1.6 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1f2328;\
background:#f6f8fa;max-width:60rem;margin:0 auto;padding:1rem 1.5rem}
section,article{background:#fff;border:1px solid #d0d7de;border-radius:8px;\
padding:1rem 1.25rem;margin:1rem 0}
h1{margin:.5rem 0}h2{font-size:1.15rem;margin:0 0 .5rem;overflow-wrap:anywhere}\
h3{font-size:1rem;margin:.75rem 0 .25rem}
ul.legend,ul.chips{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.4rem .9rem}
mark.e{background:var(--b);color:inherit;border-bottom:2px solid var(--a);border-radius:3px;\
padding:0 2px}
mark.e::after{content:attr(data-label);font-size:.68em;font-weight:700;color:#fff;\
background:var(--a);border-radius:3px;padding:0 3px;margin-left:3px;vertical-align:.15em}
.chip{display:inline-block;background:#eef1f4;border:1px solid #afb8c1;border-radius:999px;\
padding:0 .6rem;font-size:.85rem}
.n{color:#57606a;font-variant-numeric:tabular-nums}
.types{display:grid;grid-template-columns:repeat(auto-fill,minmax(13rem,1fr));gap:.5rem 1rem}
.types ol{margin:0;padding-left:1.6rem;overflow-wrap:anywhere}
.text{white-space:pre-wrap;overflow-wrap:anywhere;margin-top:.75rem}
article.failed{border-color:#cf222e}.error{color:#a40e26;white-space:pre-wrap}
";

fn write_page(out: &mut String, title: &str, articles: &[PageArticle]) -> fmt::Result {
    let title = Esc(title);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )?;
    write_legend(out, articles)?;
    write_summary(out, &Summary::of(articles))?;
    for article in articles {
        write_article(out, article)?;
    }
    out.push_str("</body>\n</html>\n");
    Ok(())
}

/// A `<mark>` opening tag for an entity of type `label`; `title` is shown on hover.
pub fn open_mark(out: &mut String, label: &str, title: &str) -> fmt::Result {
    open_mark_with(out, label, title, "")
}

/// As [`open_mark`], with extra CSS classes (space-separated; empty for none).
fn open_mark_with(out: &mut String, label: &str, title: &str, class: &str) -> fmt::Result {
    let c = type_colour(label);
    let space = if class.is_empty() { "" } else { " " };
    write!(
        out,
        "<mark class=\"e{space}{}\" data-label=\"{}\" title=\"{}\" style=\"--b:{};--a:{}\">",
        Esc(class),
        Esc(label),
        Esc(title),
        c.background,
        c.accent
    )
}

/// The standard entity types, then any other type the articles use.
fn write_legend(out: &mut String, articles: &[PageArticle]) -> fmt::Result {
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
    out.push_str("<section class=\"legend\">\n<h2>Entity types</h2>\n<ul class=\"legend\">\n");
    for (label, description) in entries {
        out.push_str("<li>");
        open_mark(out, label, label)?;
        writeln!(out, "{}</mark></li>", Esc(description))?;
    }
    out.push_str("</ul>\n</section>\n");
    Ok(())
}

fn write_summary(out: &mut String, summary: &Summary) -> fmt::Result {
    writeln!(
        out,
        "<section class=\"summary\">\n<h2>Summary</h2>\n<p>{} article{} tagged, {} failed.</p>",
        summary.tagged,
        if summary.tagged == 1 { "" } else { "s" },
        summary.failed
    )?;
    out.push_str("<h3>Articles per topic</h3>\n");
    if summary.topics.is_empty() {
        out.push_str("<p>No topics.</p>\n");
    } else {
        out.push_str("<ul class=\"chips\">\n");
        for (topic, n) in &summary.topics {
            writeln!(
                out,
                "<li class=\"chip\">{} <span class=\"n\">{n}</span></li>",
                Esc(topic)
            )?;
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h3>Most frequent entities</h3>\n");
    if summary.entities.is_empty() {
        out.push_str("<p>No entities.</p>\n");
    } else {
        out.push_str("<div class=\"types\">\n");
        for (label, top) in &summary.entities {
            out.push_str("<div><h3>");
            open_mark(out, label, label)?;
            out.push_str("</mark></h3>\n<ol>\n");
            for (text, n) in top {
                writeln!(out, "<li>{} <span class=\"n\">{n}</span></li>", Esc(text))?;
            }
            out.push_str("</ol></div>\n");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
    Ok(())
}

fn write_article(out: &mut String, article: &PageArticle) -> fmt::Result {
    match article.record {
        OutputRecord::Tagged {
            id,
            entities,
            topics,
        } => {
            writeln!(out, "<article>\n<h2>{}</h2>", Esc(id))?;
            if !topics.is_empty() {
                out.push_str("<ul class=\"chips\">\n");
                for t in topics {
                    writeln!(
                        out,
                        "<li class=\"chip\">{} <span class=\"n\">{:.2}</span></li>",
                        Esc(&t.label),
                        t.score
                    )?;
                }
                out.push_str("</ul>\n");
            }
            out.push_str("<div class=\"text\">");
            write_highlighted(out, article.text, entities)?;
            out.push_str("</div>\n</article>\n");
        }
        OutputRecord::Failed { id, error } => writeln!(
            out,
            "<article class=\"failed\">\n<h2>{}</h2>\n<p class=\"error\">Not tagged: {}</p>\n</article>",
            Esc(id),
            Esc(error)
        )?,
    }
    Ok(())
}

/// A span of text to highlight: character offsets, entity type, hover title, and extra CSS
/// classes of its `<mark>` (empty for none).
pub struct Highlight<'a> {
    pub start: usize,
    pub end: usize,
    pub label: &'a str,
    pub title: String,
    pub class: &'a str,
}

/// Writes `text` escaped, with each entity in a `<mark>`. Offsets are in characters; entities
/// that are empty, out of range, or overlap one starting earlier are skipped.
pub fn write_highlighted(out: &mut String, text: &str, entities: &[OutputEntity]) -> fmt::Result {
    let spans: Vec<Highlight> = entities
        .iter()
        .map(|e| Highlight {
            start: e.start,
            end: e.end,
            label: &e.label,
            title: format!("{} {:.2}", e.label, e.score),
            class: "",
        })
        .collect();
    write_highlights(out, text, &spans)
}

/// As [`write_highlighted`], for any spans.
pub fn write_highlights(out: &mut String, text: &str, entities: &[Highlight]) -> fmt::Result {
    // Byte offset of every character boundary, so `bounds[c]` is where character `c` starts.
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect();
    let chars = bounds.len() - 1;
    let mut shown: Vec<&Highlight> = entities
        .iter()
        .filter(|e| e.start < e.end && e.end <= chars)
        .collect();
    shown.sort_by_key(|e| (e.start, e.end));
    let mut at = 0;
    for e in shown {
        if e.start < at {
            continue;
        }
        write!(out, "{}", Esc(&text[bounds[at]..bounds[e.start]]))?;
        open_mark_with(out, e.label, &e.title, e.class)?;
        write!(out, "{}</mark>", Esc(&text[bounds[e.start]..bounds[e.end]]))?;
        at = e.end;
    }
    write!(out, "{}", Esc(&text[bounds[at]..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::output::OutputTopic;

    fn entity(start: usize, end: usize, label: &str, text: &str) -> OutputEntity {
        OutputEntity {
            start,
            end,
            label: label.into(),
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
        let mut out = String::new();
        write_highlighted(&mut out, text, entities).unwrap();
        out
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
    fn bad_entities_are_skipped() {
        let text = "Anna Berg in Oslo";
        let entities = [
            entity(0, 9, "PER", "Anna Berg"),
            entity(5, 12, "ORG", "Berg in"),
            entity(13, 17, "LOC", "Oslo"),
            entity(13, 18, "LOC", "Oslo?"),
            entity(15, 1000, "MISC", ""),
            entity(usize::MAX, usize::MAX, "MISC", ""),
            entity(4, 2, "MISC", ""),
            entity(3, 3, "MISC", ""),
        ];
        let out = highlighted(text, &entities);
        assert_eq!(out.matches("<mark").count(), 2, "{out}");
        assert!(out.contains("\">Anna Berg</mark> in <mark"));
        assert!(out.ends_with("\">Oslo</mark>"));
        assert_eq!(highlighted("", &entities), "");
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

    #[test]
    fn unknown_types_get_a_stable_palette_colour() {
        assert_eq!(type_colour("PER"), KNOWN_TYPES[0].2);
        assert_eq!(type_colour("EVENT"), type_colour("EVENT"));
        assert!(PALETTE.contains(&type_colour("EVENT")));
    }
}
