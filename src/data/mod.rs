//! Data formats: annotated articles, CoNLL files, articles JSONL, and inputs for tagging.
//!
//! Every format is read into [`Article`]: the text, its words (byte ranges), and optional entity and
//! topic annotations. Entities are spans of whole words, so offsets can never cut a word.

pub mod conll;
pub mod input;
pub mod jsonl;
pub mod load;
pub mod words;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The topics newstag knows by default (see `data/README.md` for their definitions).
pub const DEFAULT_TOPICS: [&str; 4] = ["energy", "borders", "defense", "trade"];
/// The CoNLL-2003 entity types.
pub const DEFAULT_ENTITY_TYPES: [&str; 4] = ["PER", "ORG", "LOC", "MISC"];

/// A problem in an input file, located by file, line and (when known) article id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DataError {
    pub path: PathBuf,
    /// 1-based line number; 0 when the problem concerns the whole file.
    pub line: usize,
    pub article: Option<String>,
    pub message: String,
}

impl DataError {
    pub fn new(path: &Path, line: usize, message: impl Into<String>) -> Self {
        DataError {
            path: path.to_path_buf(),
            line,
            article: None,
            message: message.into(),
        }
    }

    pub fn in_article(mut self, id: &str) -> Self {
        self.article = Some(id.to_string());
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(id) = &self.article {
            write!(f, ": article {id:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a reader found: the articles it could read and the problems it met.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    pub articles: Vec<Article>,
    pub problems: Vec<DataError>,
    /// Notes that do not stop reading (for example: a file read under IOB1 rules).
    pub warnings: Vec<String>,
}

impl ReadOutcome {
    /// All articles, or an error listing every problem (at most 20 shown).
    pub fn into_result(self) -> anyhow::Result<Vec<Article>> {
        if self.problems.is_empty() {
            return Ok(self.articles);
        }
        Err(problems_error(&self.problems))
    }
}

/// One error that lists the first problems and counts the rest.
pub fn problems_error(problems: &[DataError]) -> anyhow::Error {
    let mut msg = String::new();
    for p in problems.iter().take(20) {
        msg.push_str(&format!("\n  {p}"));
    }
    if problems.len() > 20 {
        msg.push_str(&format!("\n  ... and {} more", problems.len() - 20));
    }
    anyhow::anyhow!("{} problem(s) in the input:{msg}", problems.len())
}

/// The entity types and topics a file may use; anything else is reported as unknown.
#[derive(Debug, Clone)]
pub struct Schema {
    pub entity_types: Vec<String>,
    pub topics: Vec<String>,
}

impl Default for Schema {
    fn default() -> Self {
        Schema {
            entity_types: DEFAULT_ENTITY_TYPES.iter().map(|s| s.to_string()).collect(),
            topics: DEFAULT_TOPICS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Schema {
    pub fn check_type(&self, label: &str) -> Result<(), String> {
        if self.entity_types.iter().any(|t| t == label) {
            Ok(())
        } else {
            Err(format!(
                "unknown entity type {label:?} (known: {})",
                self.entity_types.join(", ")
            ))
        }
    }

    pub fn check_topic(&self, topic: &str) -> Result<(), String> {
        if self.topics.iter().any(|t| t == topic) {
            Ok(())
        } else {
            Err(format!(
                "unknown topic {topic:?} (known: {})",
                self.topics.join(", ")
            ))
        }
    }
}

/// A named entity: a label over a range of whole words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entity {
    pub words: Range<usize>,
    pub label: String,
}

/// One article: text, words, and optional annotations.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    pub id: String,
    pub text: String,
    words: Vec<Range<usize>>,
    sentence_starts: Vec<usize>,
    /// `None` when the article carries no entity annotation (it then adds no entity loss or score).
    pub entities: Option<Vec<Entity>>,
    /// `None` when the article carries no topic annotation.
    pub topics: Option<Vec<String>>,
}

impl Article {
    /// An unannotated article whose words come from [`words::split_words`].
    pub fn from_text(id: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let words = words::split_words(&text);
        Article {
            id: id.into(),
            text,
            words,
            sentence_starts: Vec::new(),
            entities: None,
            topics: None,
        }
    }

    /// An article from pre-split words (as CoNLL gives them): the text is the words joined by
    /// spaces, sentences by newlines.
    pub fn from_sentences<S: AsRef<str>>(id: impl Into<String>, sentences: &[Vec<S>]) -> Self {
        let mut text = String::new();
        let mut words = Vec::new();
        let mut sentence_starts = Vec::new();
        for sentence in sentences {
            if !text.is_empty() {
                text.push('\n');
            }
            sentence_starts.push(words.len());
            for (i, w) in sentence.iter().enumerate() {
                if i > 0 {
                    text.push(' ');
                }
                let start = text.len();
                text.push_str(w.as_ref());
                words.push(start..text.len());
            }
        }
        Article {
            id: id.into(),
            text,
            words,
            sentence_starts,
            entities: None,
            topics: None,
        }
    }

    /// Byte ranges of the words in `text`.
    pub fn words(&self) -> &[Range<usize>] {
        &self.words
    }

    pub fn word(&self, i: usize) -> &str {
        &self.text[self.words[i].clone()]
    }

    /// Word indices where a sentence starts (known for CoNLL input; empty otherwise). Entities never
    /// cross them.
    pub fn sentence_starts(&self) -> &[usize] {
        &self.sentence_starts
    }

    /// Byte range of an entity in `text`.
    pub fn entity_bytes(&self, e: &Entity) -> Range<usize> {
        self.words[e.words.start].start..self.words[e.words.end - 1].end
    }

    /// Maps a byte range of `text` onto whole words, or explains why it cannot.
    pub fn words_of_bytes(&self, bytes: Range<usize>) -> Result<Range<usize>, String> {
        let first = self.words.partition_point(|w| w.end <= bytes.start);
        let last = self.words.partition_point(|w| w.start < bytes.end);
        if first >= last {
            return Err("covers no word".into());
        }
        let (fw, lw) = (&self.words[first], &self.words[last - 1]);
        if fw.start < bytes.start {
            return Err(format!(
                "starts inside the word {:?} (split as {:?} + {:?})",
                &self.text[fw.clone()],
                &self.text[fw.start..bytes.start],
                &self.text[bytes.start..fw.end]
            ));
        }
        if lw.end > bytes.end {
            return Err(format!(
                "ends inside the word {:?} (split as {:?} + {:?})",
                &self.text[lw.clone()],
                &self.text[lw.start..bytes.end],
                &self.text[bytes.end..lw.end]
            ));
        }
        if fw.start != bytes.start || lw.end != bytes.end {
            return Err("starts or ends with white space".into());
        }
        Ok(first..last)
    }
}

/// Converts between byte offsets and character (Unicode scalar value) offsets of one text.
pub struct CharOffsets {
    /// Byte offset of every char start, plus the text length at the end.
    char_starts: Vec<usize>,
}

impl CharOffsets {
    pub fn new(text: &str) -> Self {
        let mut char_starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        char_starts.push(text.len());
        CharOffsets { char_starts }
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.char_starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Char offset of a byte offset that lies on a char boundary.
    pub fn to_char(&self, byte: usize) -> usize {
        self.char_starts.partition_point(|&b| b < byte)
    }

    /// Byte offset of a char offset, `None` past the end.
    pub fn to_byte(&self, ch: usize) -> Option<usize> {
        self.char_starts.get(ch).copied()
    }
}

/// A BIO tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tag {
    Outside,
    Begin(String),
    Inside(String),
}

impl Tag {
    /// Parses `O`, `B-TYPE` or `I-TYPE`.
    pub fn parse(s: &str) -> Result<Tag, String> {
        if s == "O" {
            return Ok(Tag::Outside);
        }
        let (prefix, label) = s
            .split_once('-')
            .ok_or_else(|| format!("malformed tag {s:?} (expected O, B-TYPE or I-TYPE)"))?;
        if label.is_empty() || label.chars().any(char::is_whitespace) {
            return Err(format!("malformed tag {s:?}: missing or blank entity type"));
        }
        match prefix {
            "B" => Ok(Tag::Begin(label.to_string())),
            "I" => Ok(Tag::Inside(label.to_string())),
            _ => Err(format!(
                "malformed tag {s:?}: prefix {prefix:?} is not B or I"
            )),
        }
    }

    pub fn label(&self) -> Option<&str> {
        match self {
            Tag::Outside => None,
            Tag::Begin(l) | Tag::Inside(l) => Some(l),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tag::Outside => write!(f, "O"),
            Tag::Begin(l) => write!(f, "B-{l}"),
            Tag::Inside(l) => write!(f, "I-{l}"),
        }
    }
}

/// Entities of a tag sequence read leniently (IOB1 and IOB2 alike, as conlleval does): `B-X` starts
/// an entity, `I-X` continues an entity of type X or starts one. Sentence starts end any entity.
pub fn entities_from_tags(tags: &[Tag], sentence_starts: &[usize]) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut open: Option<(usize, &str)> = None;
    let mut next_break = sentence_starts.iter().peekable();
    for (i, tag) in tags.iter().enumerate() {
        let mut at_break = false;
        while next_break.peek().is_some_and(|&&b| b <= i) {
            at_break |= *next_break.next().unwrap() == i;
        }
        let continues =
            matches!((tag, open), (Tag::Inside(l), Some((_, o))) if l == o) && !at_break;
        if continues {
            continue;
        }
        if let Some((s, l)) = open.take() {
            out.push(Entity {
                words: s..i,
                label: l.to_string(),
            });
        }
        if let Some(l) = tag.label() {
            open = Some((i, l));
        }
    }
    if let Some((s, l)) = open {
        out.push(Entity {
            words: s..tags.len(),
            label: l.to_string(),
        });
    }
    out
}

/// IOB2 tags for `n` words from entities.
pub fn tags_from_entities(n: usize, entities: &[Entity]) -> Vec<Tag> {
    let mut tags = vec![Tag::Outside; n];
    for e in entities {
        for (k, i) in e.words.clone().enumerate() {
            tags[i] = if k == 0 {
                Tag::Begin(e.label.clone())
            } else {
                Tag::Inside(e.label.clone())
            };
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<Tag> {
        s.split_whitespace()
            .map(|t| Tag::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn lenient_reading_handles_iob1_and_iob2() {
        let iob1 = entities_from_tags(&tags("I-PER I-PER O I-LOC B-LOC I-ORG"), &[]);
        let spans: Vec<_> = iob1
            .iter()
            .map(|e| (e.words.clone(), e.label.as_str()))
            .collect();
        assert_eq!(
            spans,
            [(0..2, "PER"), (3..4, "LOC"), (4..5, "LOC"), (5..6, "ORG")]
        );
        let round = tags_from_entities(6, &iob1);
        assert_eq!(entities_from_tags(&round, &[]), iob1);
    }

    #[test]
    fn sentence_starts_end_entities() {
        let e = entities_from_tags(&tags("B-PER I-PER I-PER"), &[0, 2]);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].words, 2..3);
    }

    #[test]
    fn byte_ranges_map_to_whole_words_only() {
        let a = Article::from_text("a", "Kazakhstan's oil");
        assert_eq!(a.words_of_bytes(0..10).unwrap(), 0..1);
        let err = a.words_of_bytes(0..6).unwrap_err();
        assert!(err.contains("\"Kazakh\" + \"stan\""), "{err}");
        assert!(a.words_of_bytes(10..10).is_err());
        assert_eq!(
            a.words_of_bytes(12..16).unwrap_err(),
            "starts or ends with white space"
        );
    }

    #[test]
    fn char_offsets_roundtrip() {
        let text = "Zürich 🚀 Москва";
        let c = CharOffsets::new(text);
        assert_eq!(c.len(), text.chars().count());
        let b = text.find('М').unwrap();
        assert_eq!(c.to_char(b), 9);
        assert_eq!(c.to_byte(9), Some(b));
        assert_eq!(c.to_byte(c.len() + 1), None);
    }

    #[test]
    fn malformed_tags_are_rejected() {
        assert!(Tag::parse("I-").is_err());
        assert!(Tag::parse("X-PER").is_err());
        assert!(Tag::parse("PER").is_err());
        assert_eq!(Tag::parse("B-FOO").unwrap(), Tag::Begin("FOO".into()));
    }
}
