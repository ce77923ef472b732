//! Loading annotated files: each file's format comes from `--format` or from its name (see
//! [`Format::detect`]), and [`read_annotated`] reads it through [`formats::read`], the one dispatch
//! every verb uses. A CoNLL file's topics come from a sidecar paired by position.

use super::formats::{self, Format};
use super::{ReadOutcome, Schema, DEFAULT_ENTITY_TYPES, DEFAULT_TOPICS};
use std::path::{Path, PathBuf};

/// An annotated file, its format and how to read it, and for CoNLL its topics sidecar.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnnotatedFile {
    pub path: PathBuf,
    pub topics: Option<PathBuf>,
    /// `None` (runs saved before formats were chosen): detected from the file.
    #[serde(default)]
    pub format: Option<Format>,
    /// Whose annotations to read where a tool's file has several annotators.
    #[serde(default)]
    pub annotator: Option<String>,
    /// Widen spans that cut a word to whole words instead of refusing them.
    #[serde(default)]
    pub snap: bool,
}

impl AnnotatedFile {
    /// A file whose format is detected from its name, with its sidecar (CoNLL).
    pub fn new(path: PathBuf, topics: Option<PathBuf>) -> Self {
        AnnotatedFile {
            path,
            topics,
            format: None,
            annotator: None,
            snap: false,
        }
    }
}

/// How the files of one flag are read: `--format` (else detected), `--annotator`, `--snap`.
#[derive(Debug, Clone, Default)]
pub struct FormatChoice {
    pub format: Option<Format>,
    pub annotator: Option<String>,
    pub snap: bool,
}

pub fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

/// Pairs topics sidecars with the CoNLL files among `files`, in order, and fixes each file's format.
pub fn pair_sidecars(
    files: &[PathBuf],
    sidecars: &[PathBuf],
    choice: &FormatChoice,
) -> anyhow::Result<Vec<AnnotatedFile>> {
    let formats: Vec<Format> = files
        .iter()
        .map(|f| choice.format.unwrap_or_else(|| Format::detect(f)))
        .collect();
    let conll = formats.iter().filter(|f| **f == Format::Conll).count();
    anyhow::ensure!(
        sidecars.len() <= conll,
        "{} topics sidecar(s) but only {conll} CoNLL file(s): each sidecar belongs to the CoNLL file in the same position",
        sidecars.len()
    );
    let mut sidecars = sidecars.iter();
    Ok(files
        .iter()
        .zip(formats)
        .map(|(f, format)| AnnotatedFile {
            path: f.clone(),
            topics: if format == Format::Conll {
                sidecars.next().cloned()
            } else {
                None
            },
            format: Some(format),
            annotator: choice.annotator.clone(),
            snap: choice.snap,
        })
        .collect())
}

/// Reads one annotated file; with a schema, unknown labels are problems.
pub fn read_annotated(
    file: &AnnotatedFile,
    schema: Option<&Schema>,
) -> anyhow::Result<ReadOutcome> {
    let format = file.format.unwrap_or_else(|| Format::detect(&file.path));
    formats::read(
        format,
        &file.path,
        formats::ReadOptions {
            schema,
            annotator: file.annotator.as_deref(),
            snap: file.snap,
            topics: file.topics.as_deref(),
        },
    )
}

/// Reads several files into one list; `skip_invalid` drops bad articles (counted in warnings)
/// instead of failing.
pub fn read_all(
    files: &[AnnotatedFile],
    schema: Option<&Schema>,
    skip_invalid: bool,
) -> anyhow::Result<Vec<super::Article>> {
    let mut articles = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let outcome = read_annotated(f, schema)?;
        for w in &outcome.warnings {
            eprintln!("warning: {w}");
        }
        problems.extend(outcome.problems);
        articles.extend(outcome.articles);
    }
    if !problems.is_empty() {
        if !skip_invalid {
            return Err(super::problems_error(&problems));
        }
        eprintln!(
            "warning: skipped {} invalid record(s) (--skip-invalid); first: {}",
            problems.len(),
            problems[0]
        );
    }
    Ok(articles)
}

/// Labels found in articles, known ones first in their usual order, others sorted.
pub fn found_labels(articles: &[super::Article]) -> (Vec<String>, Vec<String>) {
    let mut types: Vec<String> = articles
        .iter()
        .flat_map(|a| a.entities.iter().flatten().map(|e| e.label.clone()))
        .collect();
    let mut topics: Vec<String> = articles
        .iter()
        .flat_map(|a| a.topics.iter().flatten().cloned())
        .collect();
    (
        ordered(&mut types, &DEFAULT_ENTITY_TYPES),
        ordered(&mut topics, &DEFAULT_TOPICS),
    )
}

fn ordered(found: &mut Vec<String>, known: &[&str]) -> Vec<String> {
    found.sort();
    found.dedup();
    let mut out: Vec<String> = known
        .iter()
        .filter(|k| found.iter().any(|f| f == *k))
        .map(|k| k.to_string())
        .collect();
    out.extend(
        found
            .iter()
            .filter(|f| !known.contains(&f.as_str()))
            .cloned(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_empty_documents_do_not_shift_sidecar_topics() {
        let dir = tempfile::tempdir().unwrap();
        let (conll, sidecar) = (
            dir.path().join("w.conll"),
            dir.path().join("w.topics.jsonl"),
        );
        // Documents 1 (middle) and 3 (a bare -DOCSTART- at the end, as WikiGold has) are empty.
        std::fs::write(
            &conll,
            "-DOCSTART- O\n\nOil O\n\n-DOCSTART- O\n\n-DOCSTART- O\n\nTroops O\n\n-DOCSTART- O\n",
        )
        .unwrap();
        std::fs::write(
            &sidecar,
            "{\"doc\": 0, \"topics\": [\"energy\"]}\n{\"doc\": 1, \"topics\": [\"trade\"]}\n{\"doc\": 2, \"topics\": [\"defense\"]}\n{\"doc\": 3, \"topics\": []}\n",
        )
        .unwrap();
        let file = AnnotatedFile::new(conll, Some(sidecar));
        let out = read_annotated(&file, Some(&Schema::default())).unwrap();
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        let got: Vec<(&str, &str, Vec<String>)> = out
            .articles
            .iter()
            .map(|a| (a.id.as_str(), a.text.as_str(), a.topics.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("w#0", "Oil", vec!["energy".to_string()]),
                ("w#2", "Troops", vec!["defense".to_string()])
            ]
        );
        // The sidecar's topics are checked against the schema on their own line.
        let bad = dir.path().join("bad.topics.jsonl");
        std::fs::write(
            &bad,
            "{\"doc\": 0, \"topics\": []}\n{\"doc\": 1, \"topics\": []}\n{\"doc\": 2, \"topics\": [\"sport\"]}\n{\"doc\": 3, \"topics\": []}\n",
        )
        .unwrap();
        let file = AnnotatedFile {
            topics: Some(bad),
            ..file
        };
        let out = read_annotated(&file, Some(&Schema::default())).unwrap();
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs.len(), 1);
        assert!(
            msgs[0].ends_with("bad.topics.jsonl:3: article \"w#2\": unknown topic \"sport\" (known: energy, borders, defense, trade)"),
            "{msgs:?}"
        );
    }
}
