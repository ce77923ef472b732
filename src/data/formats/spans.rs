//! Character spans from another tool, resolved exactly onto newstag's whole-word entities.
//!
//! Tools count offsets in different units: Python tools (doccano, Prodigy, brat) count code points,
//! as newstag does; Label Studio's browser front end counts UTF-16 code units, as JavaScript
//! strings do, so every character outside the Basic Multilingual Plane (an emoji, some CJK) counts
//! twice. [`TextIndex`] converts both ways; [`SpanCollector`] checks spans the way the articles
//! JSONL reader does and, with `snap`, widens a span that cuts a word to the words it touches.

use crate::data::{check_entity_type, Article, Entity, Schema};
use std::ops::Range;

/// The unit a tool counts offsets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (Python's `str` indices; newstag's own unit).
    CodePoints,
    /// UTF-16 code units (JavaScript's string indices).
    Utf16,
}

impl Unit {
    /// How messages name the unit.
    pub fn name(self) -> &'static str {
        match self {
            Unit::CodePoints => "characters",
            Unit::Utf16 => "UTF-16 code units",
        }
    }
}

/// Byte, code point and UTF-16 positions of every character boundary of one text.
pub struct TextIndex {
    /// Byte offset of every char start, plus the text length.
    bytes: Vec<usize>,
    /// UTF-16 offset of every char start, plus the UTF-16 length.
    utf16: Vec<usize>,
}

impl TextIndex {
    pub fn new(text: &str) -> Self {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        let mut utf16 = Vec::with_capacity(text.len() + 1);
        let mut u = 0;
        for (b, c) in text.char_indices() {
            bytes.push(b);
            utf16.push(u);
            u += c.len_utf16();
        }
        bytes.push(text.len());
        utf16.push(u);
        TextIndex { bytes, utf16 }
    }

    /// The text's length in `unit`.
    pub fn len(&self, unit: Unit) -> usize {
        match unit {
            Unit::CodePoints => self.bytes.len() - 1,
            Unit::Utf16 => *self.utf16.last().unwrap_or(&0),
        }
    }

    /// The byte offset of an offset in `unit`: `Err` past the end, or (UTF-16) between the two
    /// halves of a surrogate pair.
    pub fn to_byte(&self, unit: Unit, n: usize) -> Result<usize, String> {
        let len = self.len(unit);
        if n > len {
            return Err(format!("lies outside the text ({len} {})", unit.name()));
        }
        match unit {
            Unit::CodePoints => Ok(self.bytes[n]),
            Unit::Utf16 => match self.utf16.binary_search(&n) {
                Ok(i) => Ok(self.bytes[i]),
                Err(_) => Err(format!(
                    "offset {n} falls between the two UTF-16 halves of one character"
                )),
            },
        }
    }

    /// The offset in `unit` of a byte offset on a char boundary.
    pub fn from_byte(&self, unit: Unit, byte: usize) -> usize {
        let i = self.bytes.partition_point(|&b| b < byte);
        match unit {
            Unit::CodePoints => i,
            Unit::Utf16 => self.utf16[i],
        }
    }
}

/// Messages with their locations: `(at, message)`.
pub type Located = Vec<(String, String)>;

/// Collects the entities of one article from a tool's spans: bad spans become messages (the
/// caller adds file, line or JSON path, and article), snapped spans become notes.
pub struct SpanCollector<'a> {
    article: &'a Article,
    index: TextIndex,
    schema: Option<&'a Schema>,
    snap: bool,
    found: Vec<(Range<usize>, Entity, String)>,
    /// Problems, each with the location the caller gave.
    pub problems: Vec<(String, String)>,
    /// Notes (a span snapped to whole words), each with its location.
    pub notes: Vec<(String, String)>,
}

impl<'a> SpanCollector<'a> {
    pub fn new(article: &'a Article, schema: Option<&'a Schema>, snap: bool) -> Self {
        SpanCollector {
            article,
            index: TextIndex::new(&article.text),
            schema,
            snap,
            found: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The index of the article's text.
    pub fn index(&self) -> &TextIndex {
        &self.index
    }

    /// Adds the span `start..end` (in `unit`) labelled `label`; `at` locates it in messages
    /// (a JSON path, or empty). `expect`, when the tool records the span's text, must match.
    pub fn add(
        &mut self,
        at: &str,
        start: usize,
        end: usize,
        label: &str,
        unit: Unit,
        expect: Option<&str>,
    ) {
        match self.resolve(start, end, label, unit, expect) {
            Ok((bytes, entity, note)) => {
                let what = format!("entity {start}..{end} {label}");
                if let Some(n) = note {
                    self.notes.push((at.to_string(), n));
                }
                self.found.push((bytes, entity, what));
            }
            Err(msg) => self.problems.push((at.to_string(), msg)),
        }
    }

    fn resolve(
        &self,
        start: usize,
        end: usize,
        label: &str,
        unit: Unit,
        expect: Option<&str>,
    ) -> Result<(Range<usize>, Entity, Option<String>), String> {
        check_entity_type(label).map_err(|msg| format!("entity {start}..{end}: {msg}"))?;
        let what = format!("entity {start}..{end} {label}");
        if let Some(Err(msg)) = self.schema.map(|s| s.check_type(label)) {
            return Err(format!("{what}: {msg}"));
        }
        if end <= start {
            let kind = if end == start {
                "is empty"
            } else {
                "ends before it starts"
            };
            return Err(format!("{what} {kind}"));
        }
        let b0 = self
            .index
            .to_byte(unit, start)
            .map_err(|m| format!("{what} {m}"))?;
        let b1 = self
            .index
            .to_byte(unit, end)
            .map_err(|m| format!("{what} {m}"))?;
        let text = &self.article.text;
        if let Some(expect) = expect {
            if expect != &text[b0..b1] {
                return Err(format!(
                    "{what}: the text at {start}..{end} ({} counted) is {:?}, but the span records {expect:?}",
                    unit.name(),
                    &text[b0..b1]
                ));
            }
        }
        let label = label.to_string();
        match self.article.words_of_bytes(b0..b1) {
            Ok(words) => Ok((b0..b1, Entity { words, label }, None)),
            Err(msg) if !self.snap => Err(format!("{what} ({:?}) {msg}", &text[b0..b1])),
            Err(msg) => {
                let ws = self.article.words();
                let first = ws.partition_point(|w| w.end <= b0);
                let last = ws.partition_point(|w| w.start < b1);
                if first >= last {
                    return Err(format!("{what} ({:?}) {msg}", &text[b0..b1]));
                }
                let snapped = ws[first].start..ws[last - 1].end;
                let note = format!(
                    "{what} ({:?}) {msg}: snapped to the words {}..{} ({:?}) (--snap)",
                    &text[b0..b1],
                    self.index.from_byte(unit, snapped.start),
                    self.index.from_byte(unit, snapped.end),
                    &text[snapped.clone()]
                );
                Ok((
                    snapped,
                    Entity {
                        words: first..last,
                        label,
                    },
                    Some(note),
                ))
            }
        }
    }

    /// The entities in text order, overlapping ones reported as problems.
    pub fn finish(mut self) -> (Vec<Entity>, Located, Located) {
        self.found.sort_by_key(|(b, _, _)| (b.start, b.end));
        let mut entities: Vec<Entity> = Vec::with_capacity(self.found.len());
        let mut last: Option<(usize, String)> = None;
        for (bytes, entity, what) in self.found {
            if let Some((end, prev)) = &last {
                if *end > bytes.start {
                    self.problems
                        .push((String::new(), format!("{what} overlaps {prev}")));
                    continue;
                }
            }
            last = Some((bytes.end, what));
            entities.push(entity);
        }
        (entities, self.problems, self.notes)
    }
}

/// Char spans of an article's entities in `unit`, with their texts.
pub fn spans_in(article: &Article, entities: &[Entity], unit: Unit) -> Vec<(usize, usize, String)> {
    let index = TextIndex::new(&article.text);
    entities
        .iter()
        .map(|e| {
            let b = article.entity_bytes(e);
            (
                index.from_byte(unit, b.start),
                index.from_byte(unit, b.end),
                article.text[b].to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_counts_astral_characters_twice() {
        let text = "🚀 Astana 𝔸 Oil";
        let i = TextIndex::new(text);
        assert_eq!(i.len(Unit::CodePoints), 14);
        assert_eq!(i.len(Unit::Utf16), 16);
        let astana = text.find("Astana").unwrap();
        assert_eq!(i.to_byte(Unit::CodePoints, 2), Ok(astana));
        assert_eq!(i.to_byte(Unit::Utf16, 3), Ok(astana));
        assert_eq!(i.from_byte(Unit::Utf16, text.find("Oil").unwrap()), 13);
        assert!(i
            .to_byte(Unit::Utf16, 1)
            .unwrap_err()
            .contains("two UTF-16 halves"));
        assert!(i.to_byte(Unit::Utf16, 17).unwrap_err().contains("outside"));
    }

    #[test]
    fn spans_that_cut_words_are_refused_or_snapped() {
        let a = Article::from_text("a", "🚀 Kazakhstan oil");
        let mut strict = SpanCollector::new(&a, None, false);
        strict.add("[0]", 2, 8, "LOC", Unit::CodePoints, None);
        let (e, problems, _) = strict.finish();
        assert!(e.is_empty());
        assert!(
            problems[0]
                .1
                .contains("ends inside the word \"Kazakhstan\""),
            "{problems:?}"
        );
        let mut snap = SpanCollector::new(&a, None, true);
        snap.add("[0]", 3, 9, "LOC", Unit::Utf16, Some("Kazakh"));
        let (e, problems, notes) = snap.finish();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(e[0].words, 1..2);
        assert!(
            notes[0]
                .1
                .contains("snapped to the words 3..13 (\"Kazakhstan\")"),
            "{notes:?}"
        );
    }
}
