//! Data formats: annotated articles, CoNLL files, articles JSONL, predictions files (another
//! system's output, for `eval --predictions`), and inputs for tagging.
//!
//! Every format is read into [`Article`]: the text, its words (byte ranges), and optional entity and
//! topic annotations. Entities are spans of whole words, so offsets can never cut a word; files give
//! them as [`CharSpan`]s (character offsets), converted in [`span`].

pub mod augment;
pub mod conll;
pub mod formats;
pub mod input;
pub mod jsonl;
pub mod load;
pub mod passages;
pub mod predictions;
pub mod span;
pub mod words;

pub use span::CharSpan;

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

/// What an entity type must look like, for messages.
const TYPE_SHAPE: &str = "types look like PER, ORG, WORK_OF_ART";

/// Checks that `label` can be an entity type: upper-case ASCII letters, digits and `_`, starting
/// with a letter, and not `O`. Every such type survives a model's `id2label` as `B-TYPE`/`I-TYPE`.
pub fn check_entity_type(label: &str) -> Result<(), String> {
    let shape = |what: &str| Err(format!("entity type {label:?} {what} ({TYPE_SHAPE})"));
    if label.is_empty() {
        return Err(format!("entity type is empty ({TYPE_SHAPE})"));
    }
    if label == "O" {
        return Err(format!(
            "\"O\" is not an entity type: it marks words outside entities ({TYPE_SHAPE})"
        ));
    }
    if let Some(c) = label.chars().find(|c| c.is_whitespace() || c.is_control()) {
        let what = if c.is_whitespace() {
            "white space"
        } else {
            "a control character"
        };
        return shape(&format!("contains {what} ({})", code_point(c)));
    }
    if ["B-", "I-"].iter().any(|p| label.starts_with(p)) {
        return shape("has a BIO prefix (labels name the type alone)");
    }
    if label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && label.chars().any(|c| c.is_ascii_lowercase())
    {
        return shape("is not upper case");
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_'))
    {
        return shape(&format!(
            "contains {c:?}: only upper-case letters, digits and _ are allowed"
        ));
    }
    if !label.starts_with(|c: char| c.is_ascii_uppercase()) {
        return shape("does not start with a letter");
    }
    Ok(())
}

/// Checks that `topic` can be a topic name: not empty, no white space or control characters.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic name is empty".into());
    }
    if let Some(c) = topic
        .chars()
        .find(|&c| c.is_whitespace() || is_invisible(c))
    {
        return Err(format!(
            "topic {topic:?} contains {} ({}): topic names are single words such as \"energy\"",
            if c.is_whitespace() {
                "white space"
            } else {
                "an invisible character"
            },
            code_point(c)
        ));
    }
    Ok(())
}

/// Checks a list of topics: every name well-formed, none twice.
pub fn check_topics(topics: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        if let Err(msg) = check_topic_name(t) {
            problems.push(msg);
        } else if topics[..i].contains(t) {
            problems.push(format!("topic {t:?} is listed twice"));
        }
    }
    problems
}

/// Why `text` holds nothing for the model, or `None` when it does. White space and invisible
/// characters (control and format characters such as NUL, zero-width spaces, a byte-order mark,
/// soft hyphens, variation selectors) are not content.
pub fn blank_reason(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("no text".into());
    }
    let mut invisible: Vec<char> = Vec::new();
    for c in text.chars() {
        if c.is_whitespace() {
            continue;
        }
        if !is_invisible(c) {
            return None;
        }
        if !invisible.contains(&c) {
            invisible.push(c);
        }
    }
    if invisible.is_empty() {
        return Some("only white space".into());
    }
    let mut shown: Vec<String> = invisible.iter().take(4).map(|&c| code_point(c)).collect();
    if invisible.len() > 4 {
        shown.push("...".into());
    }
    Some(format!(
        "only white space and invisible characters: {}",
        shown.join(", ")
    ))
}

/// Control and format characters (Unicode Cc and Cf) and variation selectors: nothing a reader
/// sees, nothing the model reads.
fn is_invisible(c: char) -> bool {
    use unicode_categories::UnicodeCategories;
    c.is_other_control()
        || c.is_other_format()
        || matches!(c as u32, 0xFE00..=0xFE0F | 0xE0100..=0xE01EF)
}

/// `U+200B`: how messages name a character that cannot be shown.
fn code_point(c: char) -> String {
    format!("U+{:04X}", c as u32)
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

    /// Word indices where an entity may not continue from the word before: sentence starts, and
    /// the first word of every line (a headline, a dateline, a table row or a paragraph ends at
    /// a line break, and no entity in the annotated corpora crosses one). So raw text decodes as
    /// its CoNLL reading does, where sentences are lines.
    pub fn entity_breaks(&self) -> Vec<usize> {
        let lines = self.words.windows(2).enumerate().filter_map(|(i, pair)| {
            self.text[pair[0].end..pair[1].start]
                .contains('\n')
                .then_some(i + 1)
        });
        let mut breaks: Vec<usize> = self.sentence_starts.iter().copied().chain(lines).collect();
        breaks.sort_unstable();
        breaks.dedup();
        breaks
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
    fn entities_break_at_sentence_starts_and_line_breaks() {
        // Words: Astana(0) ,(1) Dec(2) 1(3) |line| Kassym(4) -(5) Jomart(6) Tokayev(7) |blank line|
        // said(8)
        let a = Article::from_text("a", "Astana, Dec 1\r\nKassym-Jomart Tokayev\n\n said");
        assert_eq!(a.word(4), "Kassym");
        assert_eq!(a.entity_breaks(), [4, 8]);
        let mut b = a.clone();
        b.sentence_starts = vec![0, 6];
        assert_eq!(b.entity_breaks(), [0, 4, 6, 8]);
        assert!(Article::from_text("a", "one line only")
            .entity_breaks()
            .is_empty());
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
    fn entity_types_look_like_per_org_work_of_art() {
        for ok in ["PER", "ORG", "WORK_OF_ART", "X", "GPE2", "B", "I"] {
            assert_eq!(check_entity_type(ok), Ok(()), "{ok}");
        }
        for (bad, expect) in [
            ("per", "entity type \"per\" is not upper case (types look like PER, ORG, WORK_OF_ART)"),
            ("Per_1", "entity type \"Per_1\" is not upper case"),
            ("O", "\"O\" is not an entity type: it marks words outside entities"),
            ("B-X", "entity type \"B-X\" has a BIO prefix (labels name the type alone)"),
            ("PER SON", "entity type \"PER SON\" contains white space (U+0020)"),
            ("", "entity type is empty (types look like PER, ORG, WORK_OF_ART)"),
            ("PER\u{0}", "entity type \"PER\\0\" contains a control character (U+0000)"),
            ("NEWS-ORG", "entity type \"NEWS-ORG\" contains '-': only upper-case letters, digits and _ are allowed"),
            ("ÉTAT", "entity type \"ÉTAT\" contains 'É'"),
            ("_X", "entity type \"_X\" does not start with a letter"),
            ("1X", "entity type \"1X\" does not start with a letter"),
        ] {
            let err = check_entity_type(bad).unwrap_err();
            assert!(err.starts_with(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn topic_names_are_single_words_listed_once() {
        assert_eq!(check_topic_name("energy"), Ok(()));
        assert_eq!(check_topic_name("foreign-trade"), Ok(()));
        assert_eq!(check_topic_name("").unwrap_err(), "topic name is empty");
        assert!(check_topic_name("a\tb")
            .unwrap_err()
            .contains("white space (U+0009)"));
        assert!(check_topic_name("a\u{200b}")
            .unwrap_err()
            .contains("an invisible character (U+200B)"));
        let topics = ["energy", "trade", "energy"].map(String::from);
        assert_eq!(check_topics(&topics), ["topic \"energy\" is listed twice"]);
    }

    #[test]
    fn invisible_text_is_blank() {
        assert_eq!(blank_reason("").unwrap(), "no text");
        assert_eq!(blank_reason(" \n\t\u{a0}").unwrap(), "only white space");
        assert_eq!(
            blank_reason("\u{0}\u{200b}\u{feff} \u{ad}\u{200b}").unwrap(),
            "only white space and invisible characters: U+0000, U+200B, U+FEFF, U+00AD"
        );
        assert!(
            blank_reason("\u{2060}\u{200c}\u{200d}\u{200e}\u{200f}\u{fe0f}")
                .unwrap()
                .ends_with(", ...")
        );
        for text in ["a", "\u{200b}Oil", "🚀", "\u{FFFD}", "北"] {
            assert_eq!(blank_reason(text), None, "{text:?}");
        }
    }

    proptest::proptest! {
        /// Every type a reader accepts survives a saved model: `B-`/`I-` tags through `id2label`
        /// and back, as a run directory is reloaded.
        #[test]
        fn accepted_types_roundtrip_through_id2label(label in "\\PC{0,6}|[A-Z][A-Z0-9_]{0,8}|[BIO]-[A-Za-z]{1,3}") {
            if check_entity_type(&label).is_ok() {
                let set = crate::model::config::TagSet::from_types(&[label.as_str(), "PER"]);
                let back = crate::model::config::TagSet::from_id2label(&set.id2label());
                proptest::prop_assert_eq!(back.ok(), Some(set));
                proptest::prop_assert_eq!(Tag::parse(&format!("I-{label}")), Ok(Tag::Inside(label.clone())));
            }
        }
    }

    #[test]
    fn malformed_tags_are_rejected() {
        assert!(Tag::parse("I-").is_err());
        assert!(Tag::parse("X-PER").is_err());
        assert!(Tag::parse("PER").is_err());
        assert_eq!(Tag::parse("B-FOO").unwrap(), Tag::Begin("FOO".into()));
    }
}
