//! Loading annotated files of either format by extension: `.jsonl` is articles JSONL, anything
//! else CoNLL (optionally with a topics sidecar).

use super::conll::{read_conll, read_topics_sidecar};
use super::jsonl::{read_jsonl, ReadOptions};
use super::{DataError, ReadOutcome, Schema, DEFAULT_ENTITY_TYPES, DEFAULT_TOPICS};
use std::path::{Path, PathBuf};

/// An annotated file and, for CoNLL, its topics sidecar.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AnnotatedFile {
    pub path: PathBuf,
    pub topics: Option<PathBuf>,
}

pub fn is_jsonl(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "jsonl")
}

/// Pairs topics sidecars with the CoNLL files among `files`, in order.
pub fn pair_sidecars(
    files: &[PathBuf],
    sidecars: &[PathBuf],
) -> anyhow::Result<Vec<AnnotatedFile>> {
    let conll = files.iter().filter(|f| !is_jsonl(f)).count();
    anyhow::ensure!(
        sidecars.len() <= conll,
        "{} topics sidecar(s) but only {conll} CoNLL file(s): each sidecar belongs to the CoNLL file in the same position",
        sidecars.len()
    );
    let mut sidecars = sidecars.iter();
    Ok(files
        .iter()
        .map(|f| AnnotatedFile {
            path: f.clone(),
            topics: if is_jsonl(f) {
                None
            } else {
                sidecars.next().cloned()
            },
        })
        .collect())
}

/// Reads one annotated file; with a schema, unknown labels are problems.
pub fn read_annotated(
    file: &AnnotatedFile,
    schema: Option<&Schema>,
) -> anyhow::Result<ReadOutcome> {
    if is_jsonl(&file.path) {
        anyhow::ensure!(
            file.topics.is_none(),
            "{}: JSONL files carry their own topics; no sidecar needed",
            file.path.display()
        );
        return read_jsonl(
            &file.path,
            ReadOptions {
                schema,
                require_id: false,
            },
        );
    }
    let conll = read_conll(&file.path, schema)?;
    let mut outcome = conll.read;
    let Some(sidecar) = &file.topics else {
        return Ok(outcome);
    };
    // The sidecar counts every document, empty and broken ones too: each article takes the topics
    // of its own document number.
    match read_topics_sidecar(sidecar, conll.documents)? {
        Ok(topics) => {
            for (a, &n) in outcome.articles.iter_mut().zip(&conll.numbers) {
                let doc = &topics[n];
                if let Some(s) = schema {
                    for topic in &doc.topics {
                        if let Err(msg) = s.check_topic(topic) {
                            outcome
                                .problems
                                .push(DataError::new(sidecar, doc.line, msg).in_article(&a.id));
                        }
                    }
                }
                a.topics = Some(doc.topics.clone());
            }
        }
        Err(mut problems) => outcome.problems.append(&mut problems),
    }
    Ok(outcome)
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
        let file = AnnotatedFile {
            path: conll,
            topics: Some(sidecar),
        };
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
