//! The annotation formats newstag reads and writes, one module each: articles JSONL, CoNLL,
//! Label Studio's JSON export, doccano JSONL, spaCy/Prodigy JSONL and brat standoff.
//!
//! [`Format`] names them and [`read`] dispatches: every verb that reads annotated data (`train`,
//! `eval`, `validate`, `convert`) goes through it. Writers return an [`Encoded`] value (bytes, or
//! the files of a directory) and what the format could not hold ([`Losses`]); the caller writes it.

pub mod brat;
pub mod conll;
pub mod csv;
pub mod doccano;
pub mod jsonl;
pub mod label_studio;
pub mod prodigy;
pub mod spans;

use super::{Article, DataError, ReadOutcome, Schema};
use std::fmt;
use std::path::Path;

/// An annotation format.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// newstag's articles JSONL (`.jsonl`).
    Jsonl,
    /// CoNLL, IOB2 or IOB1 (`.conll` and any other extension); topics in a sidecar.
    Conll,
    /// Label Studio's JSON export (`.json`).
    LabelStudio,
    /// doccano JSONL (`.doccano.jsonl`, or a `.jsonl` whose first record has triples).
    Doccano,
    /// spaCy/Prodigy JSONL (`.prodigy.jsonl`, `.spacy.jsonl`, or a `.jsonl` with `spans`/`answer`).
    #[value(alias = "spacy")]
    Prodigy,
    /// brat standoff: `.txt` + `.ann` pairs (a directory of them, or one pair).
    Brat,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "jsonl",
            Format::Conll => "conll",
            Format::LabelStudio => "label-studio",
            Format::Doccano => "doccano",
            Format::Prodigy => "prodigy",
            Format::Brat => "brat",
        })
    }
}

impl Format {
    /// The format of a path by its name alone (directories and `.ann` are brat; a `.jsonl` is
    /// looked into by [`Format::detect`]).
    pub fn by_name(path: &Path) -> Format {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if path.is_dir() || name.ends_with(".ann") {
            Format::Brat
        } else if name.ends_with(".doccano.jsonl") {
            Format::Doccano
        } else if name.ends_with(".prodigy.jsonl") || name.ends_with(".spacy.jsonl") {
            Format::Prodigy
        } else if name.ends_with(".jsonl") {
            Format::Jsonl
        } else if name.ends_with(".json") {
            Format::LabelStudio
        } else if name.ends_with(".txt") && path.with_extension("ann").is_file() {
            Format::Brat
        } else {
            Format::Conll
        }
    }

    /// The format of an input: by name, and for a plain `.jsonl` by the keys of its first record
    /// (doccano's `label` triples, Prodigy's `spans`, `tokens` or `answer`).
    pub fn detect(path: &Path) -> Format {
        let by_name = Format::by_name(path);
        if by_name != Format::Jsonl {
            return by_name;
        }
        let Ok(bytes) = std::fs::read(path) else {
            return by_name;
        };
        let first = bytes
            .split(|&b| b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace));
        let Some(Ok(serde_json::Value::Object(record))) =
            first.map(serde_json::from_slice::<serde_json::Value>)
        else {
            return by_name;
        };
        let triples = |key: &str| {
            record
                .get(key)
                .and_then(|v| v.as_array())
                .is_some_and(|a| a.first().is_some_and(|x| x.is_array()))
        };
        if ["spans", "tokens", "answer", "_input_hash"]
            .iter()
            .any(|k| record.contains_key(*k))
        {
            Format::Prodigy
        } else if triples("label")
            || triples("labels")
            || triples("entities")
            || (!record.contains_key("entities")
                && (record.contains_key("label") || record.contains_key("cats")))
        {
            Format::Doccano
        } else {
            Format::Jsonl
        }
    }

    /// The format an output path asks for (a directory, or a name without an extension, is brat).
    pub fn for_output(path: &Path) -> Format {
        if path.extension().is_none() {
            return Format::Brat;
        }
        Format::by_name(path)
    }

    /// The unit the format counts offsets in, for docs and messages.
    pub fn offset_unit(self) -> &'static str {
        match self {
            Format::LabelStudio => "UTF-16 code units (JavaScript)",
            Format::Conll => "none (tokens)",
            _ => "characters (code points)",
        }
    }
}

/// How to read an annotated file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions<'a> {
    /// With a schema, entity types and topics outside it are problems.
    pub schema: Option<&'a Schema>,
    /// Label Studio: whose annotations to read when a task has several (a user id or e-mail).
    pub annotator: Option<&'a str>,
    /// Widen spans that cut a word to the words they touch (a note per span) instead of refusing.
    pub snap: bool,
    /// CoNLL: the topics sidecar.
    pub topics: Option<&'a Path>,
}

/// Reads one annotated file (or brat directory) of `format`.
pub fn read(format: Format, path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    anyhow::ensure!(
        opts.topics.is_none() || format == Format::Conll,
        "{}: a topics sidecar belongs to a CoNLL file; {format} carries its own topics",
        path.display()
    );
    match format {
        Format::Jsonl => jsonl::read(path, opts),
        Format::Conll => conll::read(path, opts),
        Format::LabelStudio => label_studio::read(path, opts),
        Format::Doccano => doccano::read(path, opts),
        Format::Prodigy => prodigy::read(path, opts),
        Format::Brat => brat::read(path, opts),
    }
}

/// What a format could not hold when writing, counted: `(what, count)`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Losses(pub Vec<(String, usize)>);

impl Losses {
    /// Counts `n` more of `what` (nothing when `n` is 0).
    pub fn add(&mut self, what: &str, n: usize) {
        if n == 0 {
            return;
        }
        match self.0.iter_mut().find(|(w, _)| w == what) {
            Some((_, c)) => *c += n,
            None => self.0.push((what.to_string(), n)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One line per loss: `N what`.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(|(w, n)| format!("{n} {w}")).collect()
    }
}

/// What a writer made.
#[derive(Debug)]
pub enum Output {
    /// One file's bytes.
    File(Vec<u8>),
    /// The files of a directory: names (no separators) and bytes.
    Dir(Vec<(String, Vec<u8>)>),
}

/// A writer's output, a CoNLL topics sidecar when asked for, and what was lost.
#[derive(Debug)]
pub struct Encoded {
    pub output: Output,
    pub sidecar: Option<Vec<u8>>,
    pub losses: Losses,
}

/// Writes `articles` in `format`; `sidecar`: write CoNLL topics to a sidecar (else they are lost).
pub fn write(format: Format, articles: &[Article], sidecar: bool) -> Encoded {
    let (output, mut losses) = match format {
        Format::Jsonl => (Output::File(jsonl::write(articles)), Losses::default()),
        Format::Conll => {
            let (bytes, sidecar_bytes, losses) = conll::write(articles);
            let mut enc = Encoded {
                output: Output::File(bytes),
                sidecar: None,
                losses,
            };
            if sidecar {
                enc.sidecar = Some(sidecar_bytes);
            } else {
                let n = articles.iter().filter(|a| a.topics.is_some()).count();
                enc.losses.add(
                    "topic list(s) (CoNLL keeps topics in a sidecar: give --topics-out)",
                    n,
                );
            }
            return enc;
        }
        Format::LabelStudio => {
            let (b, l) = label_studio::write(articles);
            (Output::File(b), l)
        }
        Format::Doccano => {
            let (b, l) = doccano::write(articles);
            (Output::File(b), l)
        }
        Format::Prodigy => (Output::File(prodigy::write(articles)), Losses::default()),
        Format::Brat => {
            let (files, l) = brat::write(articles);
            (Output::Dir(files), l)
        }
    };
    if sidecar {
        losses.add("--topics-out ignored (only CoNLL output has a sidecar)", 1);
    }
    Encoded {
        output,
        sidecar: None,
        losses,
    }
}

/// `DataError`s from a [`spans::SpanCollector`]'s messages: `at` (a JSON path) leads the message.
pub(crate) fn located(
    path: &Path,
    line: usize,
    id: &str,
    items: Vec<(String, String)>,
) -> Vec<DataError> {
    items
        .into_iter()
        .map(|(at, msg)| {
            let msg = if at.is_empty() {
                msg
            } else {
                format!("{at}: {msg}")
            };
            DataError::new(path, line, msg).in_article(id)
        })
        .collect()
}

/// The stem of a file, for generated ids.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The topics of a record checked as every reader checks them: well-formed, listed once, and
/// known to the schema when there is one.
pub(crate) fn topic_problems(topics: &[String], schema: Option<&Schema>) -> Vec<String> {
    let mut out = super::check_topics(topics);
    if let Some(s) = schema {
        out.extend(topics.iter().filter_map(|t| s.check_topic(t).err()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_names_and_first_records() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, expect) in [
            ("a.jsonl", Format::Jsonl),
            ("a.conll", Format::Conll),
            ("a.iob", Format::Conll),
            ("a.json", Format::LabelStudio),
            ("a.doccano.jsonl", Format::Doccano),
            ("a.prodigy.jsonl", Format::Prodigy),
            ("a.spacy.jsonl", Format::Prodigy),
            ("a.ann", Format::Brat),
        ] {
            assert_eq!(Format::by_name(&d.join(name)), expect, "{name}");
        }
        assert_eq!(Format::by_name(d), Format::Brat);
        for (line, expect) in [
            (r#"{"id": "a", "text": "x", "entities": []}"#, Format::Jsonl),
            (
                r#"{"text": "x", "label": [[0, 1, "PER"]]}"#,
                Format::Doccano,
            ),
            (
                r#"{"text": "x", "entities": [[0, 1, "PER"]], "cats": []}"#,
                Format::Doccano,
            ),
            (
                r#"{"text": "x", "spans": [], "answer": "accept"}"#,
                Format::Prodigy,
            ),
            (r#"{"id": "a", "text": "x"}"#, Format::Jsonl),
        ] {
            let p = d.join("x.jsonl");
            std::fs::write(&p, line).unwrap();
            assert_eq!(Format::detect(&p), expect, "{line}");
        }
    }
}
