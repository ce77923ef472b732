//! What every newstag HTML page shares: the document shell (head, inline style, title), the
//! style itself, the colours of entity types, and article text with entities highlighted.
//!
//! The pages (`tag --html` in `infer::html`, `eval --html` in `eval::html`, a run's `index.html` in
//! `train::curves`) are maud templates: maud escapes every value put into them, so no page escapes
//! anything by hand. Each page is one self-contained file: inline CSS, no scripts, no external
//! assets.

use crate::data::CharSpan;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Colours of an entity type: a light background for the text, a dark accent for its label
/// (white label text on the accent has a contrast ratio of at least 4.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Colour {
    pub background: &'static str,
    pub accent: &'static str,
}

const fn colour(background: &'static str, accent: &'static str) -> Colour {
    Colour { background, accent }
}

/// The standard entity types, in legend order, with a description and fixed colours.
pub const KNOWN_TYPES: [(&str, &str, Colour); 4] = [
    ("PER", "person", colour("#fde2e1", "#b42318")),
    ("ORG", "organisation", colour("#dbeafe", "#1d4ed8")),
    ("LOC", "location", colour("#dcfce7", "#15803d")),
    ("MISC", "miscellaneous", colour("#fef3c7", "#a15c07")),
];

/// Colours for other entity types, picked by a hash of the type.
pub const PALETTE: [Colour; 4] = [
    colour("#f3e8ff", "#7e22ce"),
    colour("#ccfbf1", "#0f766e"),
    colour("#fce7f3", "#be185d"),
    colour("#e2e8f0", "#475569"),
];

/// The colours of an entity type: fixed for the standard types, from [`PALETTE`] by a stable
/// (FNV-1a) hash for the others.
pub fn type_colour(label: &str) -> Colour {
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

/// The style of every page.
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
.evidence{background:#fff8c5;box-shadow:0 0 0 2px #fff8c5;border-radius:2px}
.evidence::before{content:attr(data-topics);font-size:.68em;font-weight:700;color:#7d4e00;\
margin-right:4px;vertical-align:.15em}
article.failed{border-color:#cf222e}.error{color:#a40e26;white-space:pre-wrap}
";

/// The style the report pages (`eval --html`, a run's `index.html`) add to [`CSS`]: tables, bars,
/// the confusion matrix, gold and predicted side by side.
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

/// Which style a page uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// [`CSS`] alone (the tag page).
    Plain,
    /// [`CSS`] and [`REPORT_CSS`] (evaluation and run pages).
    Report,
}

/// A whole page: `<!DOCTYPE html>`, the head with `title` and the style, and a body that opens
/// with `title` as its heading.
pub fn document(title: &str, style: Style, body: Markup) -> String {
    let extra = match style {
        Style::Plain => "",
        Style::Report => REPORT_CSS,
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { "\n" (PreEscaped(CSS)) (PreEscaped(extra)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
    }
    .into_string()
        + "\n"
}

/// A highlighted entity of type `label` around `content`: its colours, its label shown after it,
/// `title` on hover, and extra CSS classes (space-separated; empty for none).
pub fn mark(label: &str, title: &str, class: &str, content: &str) -> Markup {
    let c = type_colour(label);
    let classes = if class.is_empty() {
        "e".to_string()
    } else {
        format!("e {class}")
    };
    html! {
        mark class=(classes) data-label=(label) title=(title)
            style=(format!("--b:{};--a:{}", c.background, c.accent)) { (content) }
    }
}

/// An entity type as the pages name it: an empty [`mark`], which shows the type's label (the CSS
/// adds it after every mark).
pub fn type_mark(label: &str) -> Markup {
    mark(label, label, "", "")
}

/// A span of text to highlight: where it is and its type, its hover title, and extra CSS classes
/// of its `<mark>` (empty for none).
pub struct Highlight<'a> {
    pub span: CharSpan,
    pub title: String,
    pub class: &'a str,
}

/// The byte offset of every character boundary of `text`: `bounds[c]` is where character `c`
/// starts, and the last entry is the text's length.
pub fn char_bounds(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect()
}

/// `text` with each span in a [`mark`]. Offsets are in characters; spans that are empty, out of
/// range, or overlap one starting earlier are skipped.
pub fn highlighted(text: &str, spans: &[Highlight]) -> Markup {
    let bounds = char_bounds(text);
    let chars = bounds.len() - 1;
    let mut shown: Vec<&Highlight> = spans
        .iter()
        .filter(|h| h.span.start < h.span.end && h.span.end <= chars)
        .collect();
    shown.sort_by_key(|h| (h.span.start, h.span.end));
    let mut at = 0;
    let mut pieces: Vec<(&str, Option<&Highlight>)> = Vec::new();
    for h in shown {
        let s = &h.span;
        if s.start < at {
            continue;
        }
        pieces.push((&text[bounds[at]..bounds[s.start]], None));
        pieces.push((&text[bounds[s.start]..bounds[s.end]], Some(h)));
        at = s.end;
    }
    pieces.push((&text[bounds[at]..], None));
    html! {
        @for (piece, h) in pieces {
            @match h {
                Some(h) => (mark(&h.span.label, &h.title, h.class, piece)),
                None => (piece),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn highlight(start: usize, end: usize, label: &str) -> Highlight<'static> {
        Highlight {
            span: CharSpan {
                start,
                end,
                label: label.into(),
            },
            title: format!("{label} 0.97"),
            class: "",
        }
    }

    #[test]
    fn values_are_escaped_by_the_templates() {
        let page = document("<title> & 'x'", Style::Plain, html! { p { ("<b>\"") } });
        assert!(page.starts_with("<!DOCTYPE html><html lang=\"en\"><head>"));
        assert!(page.contains("<title>&lt;title&gt; &amp; 'x'</title>"));
        assert!(page.contains("<h1>&lt;title&gt; &amp; 'x'</h1><p>&lt;b&gt;&quot;</p>"));
        assert!(!document("t", Style::Plain, html! {}).contains("max-width:76rem"));
        assert!(document("t", Style::Report, html! {}).contains("max-width:76rem"));
        let m = mark("<X>", "a\"b", "x", "<i>").into_string();
        let c = type_colour("<X>");
        assert_eq!(
            m,
            format!(
                "<mark class=\"e x\" data-label=\"&lt;X&gt;\" title=\"a&quot;b\" \
                 style=\"--b:{};--a:{}\">&lt;i&gt;</mark>",
                c.background, c.accent
            )
        );
    }

    #[test]
    fn bad_spans_are_skipped() {
        let text = "Anna Berg in Oslo";
        let spans = [
            highlight(0, 9, "PER"),
            highlight(5, 12, "ORG"),
            highlight(13, 17, "LOC"),
            highlight(13, 18, "LOC"),
            highlight(15, 1000, "MISC"),
            highlight(usize::MAX, usize::MAX, "MISC"),
            highlight(4, 2, "MISC"),
            highlight(3, 3, "MISC"),
        ];
        let out = highlighted(text, &spans).into_string();
        assert_eq!(out.matches("<mark").count(), 2, "{out}");
        assert!(out.contains("\">Anna Berg</mark> in <mark"));
        assert!(out.ends_with("\">Oslo</mark>"));
        assert_eq!(highlighted("", &spans).into_string(), "");
        assert_eq!(highlighted("a<b", &[]).into_string(), "a&lt;b");
    }

    #[test]
    fn unknown_types_get_a_stable_palette_colour() {
        assert_eq!(type_colour("PER"), KNOWN_TYPES[0].2);
        assert_eq!(type_colour("EVENT"), type_colour("EVENT"));
        assert!(PALETTE.contains(&type_colour("EVENT")));
        let mut types = ["EVENT", "LOC", "AAA", "PER"];
        types.sort_by_key(|t| type_order(t));
        assert_eq!(types, ["PER", "LOC", "AAA", "EVENT"]);
    }
}
