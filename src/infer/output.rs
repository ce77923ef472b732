//! The `tag` output: one JSON line per article,
//! `{"id", "entities": [{"start", "end", "label", "text", "score"}], "topics": [{"label", "score",
//! "evidence": {"start", "end"}}]}` with character offsets (a topic's evidence is the passage
//! that carried it), or `{"id", "error"}` for an article that could not be read; and the
//! [`Emitter`] that writes records in the other formats `tag` offers.

use super::run::TagFormat;
use super::ArticlePrediction;
use crate::data::formats::{conll, csv, label_studio};
use crate::data::{Article, CharOffsets, CharSpan, Entity};
use serde::{Deserialize, Serialize};

/// An entity in the output: its span (`start`, `end`, `label`, written first), the text there and
/// its score. It reads as its span: `e.start`, `e.label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEntity {
    #[serde(flatten)]
    pub span: CharSpan,
    /// The article's characters `start..end`.
    pub text: String,
    /// The probability of this exact span and type.
    pub score: f32,
}

impl std::ops::Deref for OutputEntity {
    type Target = CharSpan;

    fn deref(&self) -> &CharSpan {
        &self.span
    }
}

/// A topic in the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTopic {
    pub label: String,
    pub score: f32,
    /// Character offsets of the passage the topic head scored highest for this topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// A passage of the article, as character offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub start: usize,
    pub end: usize,
}

/// One output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OutputRecord {
    Tagged {
        id: String,
        entities: Vec<OutputEntity>,
        topics: Vec<OutputTopic>,
    },
    Failed {
        id: String,
        error: String,
    },
}

impl OutputRecord {
    /// The record of a tagged article; `topics` lists only those above threshold.
    pub fn tagged(
        article: &Article,
        prediction: &ArticlePrediction,
        topics: &[String],
        thresholds: &[f32],
    ) -> Self {
        let chars = CharOffsets::new(&article.text);
        let entities = prediction
            .entities
            .iter()
            .map(|e| OutputEntity {
                span: article.char_span(&chars, &e.entity),
                text: article.text[article.entity_bytes(&e.entity)].to_string(),
                score: e.score,
            })
            .collect();
        let topics = topics
            .iter()
            .zip(thresholds)
            .zip(&prediction.topic_probs)
            .zip(&prediction.topic_evidence)
            .filter(|(((_, &th), &p), _)| p >= th)
            .map(|(((label, _), &score), evidence)| OutputTopic {
                label: label.clone(),
                score,
                evidence: evidence.as_ref().map(|b| Evidence {
                    start: chars.to_char(b.start),
                    end: chars.to_char(b.end),
                }),
            })
            .collect();
        OutputRecord::Tagged {
            id: article.id.clone(),
            entities,
            topics,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            OutputRecord::Tagged { id, .. } | OutputRecord::Failed { id, .. } => id,
        }
    }

    /// The record's entities as word ranges of its article (those that are whole words of it).
    pub fn entities_of(&self, article: &Article) -> Vec<Entity> {
        let OutputRecord::Tagged { entities, .. } = self else {
            return Vec::new();
        };
        let chars = CharOffsets::new(&article.text);
        entities
            .iter()
            .filter_map(|e| article.span_entity(&chars, &e.span))
            .collect()
    }

    /// The JSON line, without newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("serialising plain data cannot fail")
    }
}

/// Turns output records into the bytes of a `tag` output format, a chunk at a time.
pub struct Emitter {
    format: TagFormat,
    model_version: String,
    records: usize,
}

impl Emitter {
    /// An emitter for `format`; `model_version` names the model in Label Studio output.
    pub fn new(format: TagFormat, model_version: &str) -> Self {
        Emitter {
            format,
            model_version: model_version.to_string(),
            records: 0,
        }
    }

    /// The bytes of one record (brat writes files instead; html collects a page). An article
    /// that failed has no place in CoNLL, Label Studio or CSV output (its error is on stderr).
    pub fn record(&mut self, article: Option<&Article>, record: &OutputRecord) -> Vec<u8> {
        let first = self.records == 0;
        let out = match (self.format, article) {
            (TagFormat::Jsonl, _) => format!("{}\n", record.to_line()).into_bytes(),
            (TagFormat::Csv, _) => {
                let mut out = if first { csv::header() } else { Vec::new() };
                out.extend(csv::rows(record));
                out
            }
            (TagFormat::Conll, Some(article)) => {
                conll::document(article, &record.entities_of(article)).into_bytes()
            }
            (TagFormat::LabelStudio, Some(article)) => {
                let task = label_studio::prediction_task(article, record, &self.model_version);
                let lead = if first { "[\n" } else { ",\n" };
                format!("{lead}{task}").into_bytes()
            }
            _ => Vec::new(),
        };
        if !out.is_empty() {
            self.records += 1;
        }
        out
    }

    /// The bytes that close the output.
    pub fn end(&self) -> Vec<u8> {
        match self.format {
            TagFormat::LabelStudio if self.records > 0 => b"\n]\n".to_vec(),
            TagFormat::LabelStudio => b"[]\n".to_vec(),
            TagFormat::Csv if self.records == 0 => csv::header(),
            _ => Vec::new(),
        }
    }
}
