//! CoNLL files: one token per line with the NER tag in the last column, blank lines between
//! sentences, `-DOCSTART-` lines between articles. IOB1 and IOB2 tags are both read (IOB1 is
//! converted); a file without `-DOCSTART-` lines is read as one article per sentence.
//!
//! Topics come from a sidecar JSONL file, one `{"doc": N, "topics": [...]}` line per article.

use super::{entities_from_tags, Article, DataError, ReadOutcome, Schema, Tag};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads a CoNLL file. Problems (bad tags, column counts, encoding) are collected, not fatal.
/// With a `schema`, entity types outside it are problems too.
pub fn read_conll(path: &Path, schema: Option<&Schema>) -> anyhow::Result<ReadOutcome> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse_conll(path, &bytes, schema))
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
}

/// Parses CoNLL bytes; `path` only names the source in messages.
pub fn parse_conll(path: &Path, bytes: &[u8], schema: Option<&Schema>) -> ReadOutcome {
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
    let mut last_line = 0;

    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        last_line = lineno;
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
        let tag = Tag::parse(fields[fields.len() - 1]).and_then(|t| match (schema, t.label()) {
            (Some(s), Some(l)) => s.check_type(l).map(|_| t),
            _ => Ok(t),
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
    if docs.is_empty() {
        out.problems.push(DataError::new(
            path,
            0,
            format!("no documents (read {last_line} lines)"),
        ));
        return out;
    }
    for (n, d) in docs.into_iter().enumerate() {
        let id = format!("{stem}#{n}");
        if d.sentences.is_empty() {
            if !d.broken {
                out.problems.push(
                    DataError::new(path, d.first_line, format!("document {n} is empty"))
                        .in_article(&id),
                );
            }
            continue;
        }
        if d.broken {
            continue;
        }
        let mut article = Article::from_sentences(id, &d.sentences);
        article.entities = Some(entities_from_tags(&d.tags, &article.sentence_starts));
        out.articles.push(article);
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarLine {
    doc: usize,
    topics: Vec<String>,
}

/// Reads a topics sidecar for a CoNLL file of `n_docs` documents.
pub fn read_topics_sidecar(
    path: &Path,
    n_docs: usize,
) -> anyhow::Result<Result<Vec<Vec<String>>, Vec<DataError>>> {
    let text =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse_topics_sidecar(path, &text, n_docs))
}

pub fn parse_topics_sidecar(
    path: &Path,
    bytes: &[u8],
    n_docs: usize,
) -> Result<Vec<Vec<String>>, Vec<DataError>> {
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
    Ok(by_doc.into_values().map(|(_, t)| t).collect())
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
        assert!(
            msgs[2].contains("x.conll:7: article \"x#1\": document 1 is empty"),
            "{msgs:?}"
        );
        assert_eq!(out.articles.len(), 1);
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
        assert!(parse("").problems[0].message.starts_with("no documents"));
        assert!(parse("-DOCSTART- -X- O\n\n")
            .problems
            .iter()
            .any(|p| p.message.contains("empty")));
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
        assert_eq!(ok, vec![vec!["trade".to_string()], vec![]]);
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
