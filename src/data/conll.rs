//! CoNLL files: one token per line with the NER tag in the last column, blank lines between
//! sentences, `-DOCSTART-` lines between articles. IOB1 and IOB2 tags are both read (IOB1 is
//! converted); a file without `-DOCSTART-` lines is read as one article per sentence.
//!
//! An article is read as text: its tokens joined by spaces and its sentences by newlines, split
//! into words by the rule for raw text ([`super::words`]), so what trains on a CoNLL file is what
//! `tag` sees on the same text (the token `U.S.` is the words `U . S .`, as in an article).
//!
//! Topics come from a sidecar JSONL file, one `{"doc": N, "topics": [...]}` line per document.
//! Documents are numbered from 0 in file order, empty ones included: an empty document is skipped
//! with a warning, and the documents after it keep their numbers (and their topics).

use super::{
    blank_reason, check_entity_type, check_topics, entities_from_tags, Article, DataError, Entity,
    ReadOutcome, Schema, Tag,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What a CoNLL file holds: the articles read, and which document each one is.
#[derive(Debug, Default)]
pub struct ConllDocuments {
    pub read: ReadOutcome,
    /// Documents in the file, empty and broken ones included: what a topics sidecar counts.
    pub documents: usize,
    /// The document number of each article of `read.articles`, in the same order.
    pub numbers: Vec<usize>,
}

/// Reads a CoNLL file. Problems (bad tags, column counts, encoding) are collected, not fatal.
/// With a `schema`, entity types outside it are problems too.
pub fn read_conll(path: &Path, schema: Option<&Schema>) -> anyhow::Result<ConllDocuments> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse_conll_documents(path, &bytes, schema))
}

struct DocBuilder {
    first_line: usize,
    sentences: Vec<Vec<String>>,
    tags: Vec<Tag>,
    current: Vec<String>,
    broken: bool,
}

impl DocBuilder {
    fn new(first_line: usize) -> Self {
        DocBuilder {
            first_line,
            sentences: Vec::new(),
            tags: Vec::new(),
            current: Vec::new(),
            broken: false,
        }
    }

    fn end_sentence(&mut self) {
        if !self.current.is_empty() {
            self.sentences.push(std::mem::take(&mut self.current));
        }
    }

    /// Does the document hold nothing for the model (no tokens, or only invisible ones)?
    fn is_empty(&self) -> bool {
        !self.broken
            && self
                .sentences
                .iter()
                .flatten()
                .all(|token| blank_reason(token).is_some())
    }
}

/// Parses CoNLL bytes; `path` only names the source in messages.
pub fn parse_conll(path: &Path, bytes: &[u8], schema: Option<&Schema>) -> ReadOutcome {
    parse_conll_documents(path, bytes, schema).read
}

/// [`parse_conll`], keeping the document number of every article.
pub fn parse_conll_documents(path: &Path, bytes: &[u8], schema: Option<&Schema>) -> ConllDocuments {
    let mut out = ReadOutcome::default();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let has_docstart = bytes
        .split(|&b| b == b'\n')
        .any(|l| l.starts_with(b"-DOCSTART-"));
    let mut columns: Option<(usize, usize)> = None; // (count, line where first seen)
    let mut docs: Vec<DocBuilder> = Vec::new();
    let mut iob1_note = false;
    // Lines as an editor counts them: a final newline ends the last line, it starts none.
    let line_count = bytes.iter().filter(|&&b| b == b'\n').count()
        + usize::from(!bytes.is_empty() && !bytes.ends_with(b"\n"));

    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) => {
                out.problems.push(DataError::new(
                    path,
                    lineno,
                    format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1),
                ));
                if let Some(d) = docs.last_mut() {
                    d.broken = true;
                }
                continue;
            }
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.first() == Some(&"-DOCSTART-") {
            if let Some(d) = docs.last_mut() {
                d.end_sentence();
            }
            docs.push(DocBuilder::new(lineno));
            continue;
        }
        if fields.is_empty() {
            if let Some(d) = docs.last_mut() {
                d.end_sentence();
                if !has_docstart && !d.sentences.is_empty() {
                    docs.push(DocBuilder::new(lineno + 1));
                }
            }
            continue;
        }
        if docs.is_empty() {
            docs.push(DocBuilder::new(lineno));
        }
        let doc = docs.last_mut().unwrap();
        match columns {
            None => columns = Some((fields.len(), lineno)),
            Some((n, first)) if n != fields.len() => {
                out.problems.push(DataError::new(
                    path,
                    lineno,
                    format!("{} columns, but line {first} has {n}: every token line needs the same columns", fields.len()),
                ));
                doc.broken = true;
                continue;
            }
            _ => {}
        }
        if fields.len() < 2 {
            out.problems.push(DataError::new(
                path,
                lineno,
                "one column only: expected `token ... TAG`",
            ));
            doc.broken = true;
            continue;
        }
        let tag = Tag::parse(fields[fields.len() - 1]).and_then(|t| {
            let Some(label) = t.label() else {
                return Ok(t);
            };
            check_entity_type(label)
                .map_err(|msg| format!("tag {:?}: {msg}", t.to_string()))
                .and_then(|_| schema.map_or(Ok(()), |s| s.check_type(label)))
                .map(|_| t)
        });
        let tag = match tag {
            Ok(t) => t,
            Err(msg) => {
                out.problems.push(DataError::new(path, lineno, msg));
                doc.broken = true;
                continue;
            }
        };
        if let Tag::Inside(label) = &tag {
            let prev = if doc.current.is_empty() {
                None
            } else {
                doc.tags.last()
            };
            if prev.and_then(Tag::label) != Some(label.as_str()) && !iob1_note {
                iob1_note = true;
                let prev = prev.map_or("a sentence start".to_string(), |t| t.to_string());
                out.warnings.push(format!(
                    "{}:{lineno}: I-{label} after {prev} is invalid IOB2; reading the file under IOB1 rules (an I- tag may start an entity)",
                    path.display()
                ));
            }
        }
        doc.tags.push(tag);
        doc.current.push(fields[0].to_string());
    }
    if let Some(d) = docs.last_mut() {
        d.end_sentence();
    }
    // A trailing builder opened by a final blank line holds nothing.
    if !has_docstart
        && docs
            .last()
            .is_some_and(|d| d.sentences.is_empty() && !d.broken)
    {
        docs.pop();
    }
    let documents = docs.len();
    let empty: Vec<(usize, usize)> = docs
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_empty())
        .map(|(n, d)| (n, d.first_line))
        .collect();
    if docs.iter().all(DocBuilder::is_empty) {
        let found = if empty.is_empty() {
            String::new()
        } else {
            format!("{} empty document(s), ", empty.len())
        };
        out.problems.push(DataError::new(
            path,
            0,
            format!("no documents ({found}read {line_count} lines)"),
        ));
        return ConllDocuments {
            read: out,
            documents,
            numbers: Vec::new(),
        };
    }
    if let Some(&(n, line)) = empty.first() {
        // Public corpora have them (WikiGold ends with a bare -DOCSTART-): not worth refusing.
        out.warnings.push(format!(
            "{}:{line}: document {n} is empty: skipped ({} empty document(s) in the file)",
            path.display(),
            empty.len()
        ));
    }
    let mut numbers = Vec::new();
    for (n, d) in docs.into_iter().enumerate() {
        if d.is_empty() || d.broken {
            continue;
        }
        let tokens = Article::from_sentences(format!("{stem}#{n}"), &d.sentences);
        let entities = entities_from_tags(&d.tags, &tokens.sentence_starts);
        let (article, lost) = as_text(tokens, &entities);
        if lost > 0 {
            out.warnings.push(format!(
                "{}:{}: document {n}: {lost} entity(ies) over tokens of invisible characters only dropped (no word to hold them)",
                path.display(),
                d.first_line
            ));
        }
        out.articles.push(article);
        numbers.push(n);
    }
    ConllDocuments {
        read: out,
        documents,
        numbers,
    }
}

/// The article of `tokens` (an article whose words are a document's tokens) re-split into words by
/// the rule for raw text, with `entities` (over tokens) moved onto the words inside their tokens,
/// and the number of entities that found no word (tokens of invisible characters only). Words
/// never cross tokens: white space separates both.
fn as_text(tokens: Article, entities: &[Entity]) -> (Article, usize) {
    let words = super::words::split_words(&tokens.text);
    // The words inside each token: those that start in it.
    let inside = |t: usize| {
        let r = &tokens.words[t];
        words.partition_point(|w| w.start < r.start)..words.partition_point(|w| w.start < r.end)
    };
    let mut sentence_starts: Vec<usize> = tokens
        .sentence_starts
        .iter()
        .map(|&t| inside(t).start)
        .filter(|&w| w < words.len())
        .collect();
    sentence_starts.dedup();
    let moved: Vec<Entity> = entities
        .iter()
        .map(|e| Entity {
            words: inside(e.words.start).start..inside(e.words.end - 1).end,
            label: e.label.clone(),
        })
        .filter(|e| !e.words.is_empty())
        .collect();
    let lost = entities.len() - moved.len();
    let article = Article {
        id: tokens.id,
        text: tokens.text,
        words,
        sentence_starts,
        entities: Some(moved),
        topics: None,
    };
    (article, lost)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarLine {
    doc: usize,
    topics: Vec<String>,
}

/// The topics of one document, and the sidecar line they are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocTopics {
    pub line: usize,
    pub topics: Vec<String>,
}

/// Reads a topics sidecar for a CoNLL file of `n_docs` documents: the topics of each document, in
/// document order.
pub fn read_topics_sidecar(
    path: &Path,
    n_docs: usize,
) -> anyhow::Result<Result<Vec<DocTopics>, Vec<DataError>>> {
    let text =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse_topics_sidecar(path, &text, n_docs))
}

/// [`read_topics_sidecar`] on bytes; `path` only names the source in messages.
pub fn parse_topics_sidecar(
    path: &Path,
    bytes: &[u8],
    n_docs: usize,
) -> Result<Vec<DocTopics>, Vec<DataError>> {
    let mut problems = Vec::new();
    let mut by_doc: BTreeMap<usize, (usize, Vec<String>)> = BTreeMap::new();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let Ok(line) = std::str::from_utf8(raw) else {
            problems.push(DataError::new(path, lineno, "invalid UTF-8"));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SidecarLine>(line) {
            Ok(l) => {
                for msg in check_topics(&l.topics) {
                    problems.push(DataError::new(
                        path,
                        lineno,
                        format!("doc {}: {msg}", l.doc),
                    ));
                }
                if let Some((first, _)) = by_doc.get(&l.doc) {
                    problems.push(DataError::new(
                        path,
                        lineno,
                        format!("doc {} listed again (first on line {first})", l.doc),
                    ));
                } else {
                    by_doc.insert(l.doc, (lineno, l.topics));
                }
            }
            Err(e) => problems.push(DataError::new(
                path,
                lineno,
                format!("malformed topics line: {e}"),
            )),
        }
    }
    if by_doc.len() != n_docs || by_doc.keys().next_back().is_some_and(|&k| k >= n_docs) {
        let missing: Vec<usize> = (0..n_docs)
            .filter(|d| !by_doc.contains_key(d))
            .take(5)
            .collect();
        problems.push(DataError::new(
            path,
            0,
            format!(
                "has topics for {} documents but the CoNLL file has {n_docs}{}",
                by_doc.len(),
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing doc {missing:?}...)")
                }
            ),
        ));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(by_doc
        .into_values()
        .map(|(line, topics)| DocTopics { line, topics })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ReadOutcome {
        parse_conll(Path::new("x.conll"), s.as_bytes(), None)
    }

    #[test]
    fn reads_documents_sentences_and_iob1() {
        let out = parse("-DOCSTART- -X- O\n\nEU NNP I-ORG\nrejects VBZ O\nGerman JJ I-MISC\n\nPeter NNP I-PER\nBlackburn NNP I-PER\n\n-DOCSTART- -X- O\n\nBonn NNP B-LOC\n");
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.warnings.len(), 1);
        assert_eq!(out.articles.len(), 2);
        let a = &out.articles[0];
        assert_eq!(a.text, "EU rejects German\nPeter Blackburn");
        assert_eq!(a.id, "x#0");
        let e = a.entities.as_ref().unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(&a.text[a.entity_bytes(&e[2])], "Peter Blackburn");
    }

    #[test]
    fn tokens_are_read_as_text_split_like_an_article() {
        let out = parse("-DOCSTART- O\n\nU.S. B-LOC\nenvoy O\n\nAL-AIN B-LOC\n\u{200b} I-LOC\n,\u{301} O\n\n\u{ad} B-PER\n");
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let a = &out.articles[0];
        assert_eq!(a.text, "U.S. envoy\nAL-AIN \u{200b} ,\u{301}\n\u{ad}");
        assert_eq!(a.words(), Article::from_text("t", a.text.clone()).words());
        let words: Vec<&str> = (0..a.words().len()).map(|i| a.word(i)).collect();
        assert_eq!(
            words,
            ["U", ".", "S", ".", "envoy", "AL", "-", "AIN", ",\u{301}"]
        );
        assert_eq!(a.sentence_starts(), [0, 5]);
        let e: Vec<_> = a
            .entities
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| (e.words.clone(), &e.label[..]))
            .collect();
        assert_eq!(e, [(0..4, "LOC"), (5..8, "LOC")]);
        assert_eq!(
            out.warnings,
            ["x.conll:1: document 0: 1 entity(ies) over tokens of invisible characters only dropped (no word to hold them)"]
        );
    }

    #[test]
    fn reports_problems_with_lines() {
        let out = parse(
            "-DOCSTART- O\n\nA B-PER\nB X C-PER\nC X-PER\n\n-DOCSTART- O\n-DOCSTART- O\nD O\n",
        );
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            msgs[0].starts_with("x.conll:4: 3 columns, but line 3 has 2"),
            "{msgs:?}"
        );
        assert!(
            msgs[1].starts_with("x.conll:5: malformed tag \"X-PER\""),
            "{msgs:?}"
        );
        assert_eq!(
            msgs.len(),
            2,
            "an empty document is not a problem: {msgs:?}"
        );
        assert_eq!(
            out.warnings,
            ["x.conll:7: document 1 is empty: skipped (1 empty document(s) in the file)"]
        );
        assert_eq!(out.articles.len(), 1);
    }

    #[test]
    fn empty_documents_are_skipped_and_keep_the_numbers_of_the_others() {
        // WikiGold-like: an empty document in the middle, and a bare -DOCSTART- at the end.
        let out = parse_conll_documents(
            Path::new("w.conll"),
            b"-DOCSTART- O\n\nParis B-LOC\n\n-DOCSTART- O\n\n\n-DOCSTART- O\n\nRome B-LOC\n\n-DOCSTART- O\n\n",
            None,
        );
        assert!(out.read.problems.is_empty(), "{:?}", out.read.problems);
        assert_eq!(
            out.read.warnings,
            ["w.conll:5: document 1 is empty: skipped (2 empty document(s) in the file)"]
        );
        assert_eq!(out.documents, 4);
        // Invisible tokens only (a zero-width space, a soft hyphen) are no more than nothing.
        let inv = parse("-DOCSTART- O\n\n\u{200b} O\n\u{ad} O\n\n-DOCSTART- O\n\nRome B-LOC\n");
        assert_eq!(
            inv.warnings,
            ["x.conll:1: document 0 is empty: skipped (1 empty document(s) in the file)"]
        );
        assert_eq!(inv.articles.len(), 1);
        assert_eq!(out.numbers, [0, 2]);
        let ids: Vec<&str> = out.read.articles.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["w#0", "w#2"]);
    }

    #[test]
    fn entity_types_are_held_to_the_type_rule() {
        for (tag, expect) in [
            ("B-per", "x.conll:1: tag \"B-per\": entity type \"per\" is not upper case (types look like PER, ORG, WORK_OF_ART)"),
            ("B-B-X", "x.conll:1: tag \"B-B-X\": entity type \"B-X\" has a BIO prefix"),
            ("I-O", "x.conll:1: tag \"I-O\": \"O\" is not an entity type"),
            ("B-1X", "x.conll:1: tag \"B-1X\": entity type \"1X\" does not start with a letter"),
            ("B-P\u{7}R", "x.conll:1: tag \"B-P\\u{7}R\": entity type \"P\\u{7}R\" contains a control character (U+0007)"),
        ] {
            let out = parse(&format!("Paris {tag}\n"));
            assert!(out.articles.is_empty());
            let msg = out.problems[0].to_string();
            assert!(msg.starts_with(expect), "{tag}: {msg}");
        }
        assert!(parse("Paris B-WORK_OF_ART\n").problems.is_empty());
    }

    #[test]
    fn handles_bom_crlf_and_bad_utf8() {
        let out = parse_conll(
            Path::new("y.conll"),
            b"\xEF\xBB\xBFA O\r\nB\xFF O\r\n",
            None,
        );
        assert_eq!(out.problems.len(), 1);
        assert!(out.problems[0]
            .to_string()
            .starts_with("y.conll:2: invalid UTF-8"));
        let ok = parse("\u{feff}Paris B-LOC\r\nis O\r\n\r\nRome B-LOC\r\n");
        assert!(ok.problems.is_empty());
        assert_eq!(
            ok.articles.len(),
            2,
            "no -DOCSTART-: one article per sentence"
        );
        assert_eq!(ok.articles[0].text, "Paris is");
    }

    #[test]
    fn empty_and_docstart_only_files_have_no_documents() {
        assert_eq!(
            parse("").problems[0].to_string(),
            "x.conll: no documents (read 0 lines)"
        );
        assert_eq!(
            parse("-DOCSTART- -X- O\n\n-DOCSTART- -X- O\n").problems[0].to_string(),
            "x.conll: no documents (2 empty document(s), read 3 lines)"
        );
    }

    #[test]
    fn unknown_types_are_problems_under_a_schema() {
        let out = parse_conll(Path::new("z.conll"), b"A B-FOO\n", Some(&Schema::default()));
        assert!(out.problems[0]
            .to_string()
            .starts_with("z.conll:1: unknown entity type \"FOO\""));
    }

    #[test]
    fn sidecar_must_match_document_count() {
        let p = Path::new("t.jsonl");
        let ok = parse_topics_sidecar(
            p,
            b"{\"doc\": 1, \"topics\": []}\n{\"doc\": 0, \"topics\": [\"trade\"]}\n",
            2,
        )
        .unwrap();
        let topics: Vec<&[String]> = ok.iter().map(|d| d.topics.as_slice()).collect();
        assert_eq!(topics, [&["trade".to_string()][..], &[]]);
        assert_eq!(ok[0].line, 2);
        let err = parse_topics_sidecar(
            p,
            b"{\"doc\": 0, \"topics\": [\"trade\", \"\", \"trade\", \"a b\"]}\n",
            1,
        )
        .unwrap_err();
        let msgs: Vec<String> = err.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "t.jsonl:1: doc 0: topic name is empty",
                "t.jsonl:1: doc 0: topic \"trade\" is listed twice",
                "t.jsonl:1: doc 0: topic \"a b\" contains white space (U+0020): topic names are single words such as \"energy\"",
            ]
        );
        let err = parse_topics_sidecar(p, b"{\"doc\": 0, \"topics\": []}\n", 2).unwrap_err();
        assert!(err[0]
            .message
            .contains("has topics for 1 documents but the CoNLL file has 2"));
        let err = parse_topics_sidecar(p, b"{\"doc\": 0}\n", 1).unwrap_err();
        assert!(err[0]
            .to_string()
            .starts_with("t.jsonl:1: malformed topics line"));
    }
}
