//! The `tag` output: one JSON line per article,
//! `{"id", "entities": [{"start", "end", "label", "text", "score"}], "topics": [{"label", "score",
//! "evidence": {"start", "end"}}]}` with character offsets (a topic's evidence is the passage
//! that carried it), or `{"id", "error"}` for an article that could not be read.

use super::ArticlePrediction;
use crate::data::{Article, CharOffsets};
use serde::{Deserialize, Serialize};

/// An entity in the output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEntity {
    pub start: usize,
    pub end: usize,
    pub label: String,
    pub text: String,
    pub score: f32,
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
            .map(|e| {
                let bytes = article.entity_bytes(&e.entity);
                OutputEntity {
                    start: chars.to_char(bytes.start),
                    end: chars.to_char(bytes.end),
                    label: e.entity.label.clone(),
                    text: article.text[bytes].to_string(),
                    score: e.score,
                }
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

    /// The JSON line, without newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("serialising plain data cannot fail")
    }
}
