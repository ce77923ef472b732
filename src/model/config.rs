//! Model configuration: the encoder's Hugging Face fields (in BERT's names, whatever the family)
//! plus newstag's own section.

use super::family::Family;
use super::topic_pooling::TopicPooling;
use crate::data::Tag;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The encoder's hyper-parameters, as in a Hugging Face BERT `config.json`. Every family reads
/// them under these names: ELECTRA and the RoBERTas use them too, and DistilBERT's own names are
/// translated on the way in and out ([`ModelConfig::from_json`], [`ModelConfig::to_json`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Activation,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
    /// ELECTRA's embedding width, projected to `hidden_size` when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// DistilBERT's fixed sinusoidal position table, which is not trained.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sinusoidal_pos_embds: bool,
    /// DeBERTa-v2's attention options (absent elsewhere).
    #[serde(flatten)]
    pub deberta: super::deberta_v2::DebertaV2Options,
    /// ModernBERT's own hyper-parameters (its `config.json`'s, read and written by
    /// [`ModelConfig::from_json`] and [`ModelConfig::to_json`]); `None` for the other families.
    #[serde(skip)]
    pub modernbert: Option<super::modernbert::ModernBertConfig>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_act() -> Activation {
    Activation::Gelu
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_position_type() -> String {
    "absolute".into()
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, Hugging Face's `"gelu"`.
    Gelu,
    /// Tanh approximation, Hugging Face's `"gelu_new"`.
    GeluNew,
    Relu,
}

impl BertConfig {
    /// A tiny configuration for tests and examples.
    pub fn tiny(vocab_size: usize) -> Self {
        BertConfig {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: Activation::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
            embedding_size: None,
            sinusoidal_pos_embds: false,
            deberta: Default::default(),
            modernbert: None,
        }
    }

    /// Checks the hyper-parameters on their own (agreement with the weights is checked at load).
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.hidden_size > 0 && self.num_attention_heads > 0 && self.vocab_size > 0,
            "hidden_size, num_attention_heads and vocab_size must be positive"
        );
        // No encoder layers is allowed (embeddings straight into the heads: a test model).
        anyhow::ensure!(
            self.intermediate_size > 0 && self.type_vocab_size > 0,
            "intermediate_size and type_vocab_size must be positive"
        );
        anyhow::ensure!(
            self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0,
            "layer_norm_eps must be a positive number (got {})",
            self.layer_norm_eps
        );
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            anyhow::ensure!(
                (0.0..1.0).contains(&p),
                "{name} must be at least 0 and below 1 (got {p})"
            );
        }
        anyhow::ensure!(
            self.hidden_size.is_multiple_of(self.num_attention_heads),
            "hidden_size {} is not a multiple of num_attention_heads {}",
            self.hidden_size,
            self.num_attention_heads
        );
        anyhow::ensure!(
            self.position_embedding_type == "absolute",
            "position_embedding_type {:?} is not supported (only \"absolute\")",
            self.position_embedding_type
        );
        anyhow::ensure!(
            self.max_position_embeddings >= 3,
            "max_position_embeddings must be at least 3"
        );
        anyhow::ensure!(
            self.embedding_size != Some(0),
            "embedding_size must be positive"
        );
        Ok(())
    }
}

/// `newstag.window` of `config.json`: defined with the windows it plans.
pub use crate::encode::WindowConfig;

/// newstag's own part of `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewstagSection {
    pub version: String,
    /// Topic labels, in the order of the topic head's outputs.
    pub topics: Vec<String>,
    /// Decision threshold per topic (chosen on dev).
    pub thresholds: Vec<f32>,
    pub window: WindowConfig,
    /// Prefix of the topic head's tensors in `model.safetensors`.
    pub topic_head: String,
    /// Score corrections fitted on dev after training (absent: scores as the heads give them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<super::calibration::ScoreCalibration>,
    /// How passages become topic scores (absent: the mean over the article, as models saved
    /// before passage pooling).
    #[serde(default, skip_serializing_if = "is_mean")]
    pub topic_pooling: TopicPooling,
}

fn is_mean(p: &TopicPooling) -> bool {
    *p == TopicPooling::Mean
}

impl NewstagSection {
    /// Topics, thresholds and windows on their own (the topic head's shape is checked at load).
    pub fn validate(&self, max_positions: usize, family: Family) -> anyhow::Result<()> {
        self.window.validate(max_positions)?;
        anyhow::ensure!(
            self.thresholds.len() == self.topics.len(),
            "{} topics but {} thresholds: one threshold per topic",
            self.topics.len(),
            self.thresholds.len()
        );
        for (i, topic) in self.topics.iter().enumerate() {
            anyhow::ensure!(!topic.trim().is_empty(), "topic {i} has an empty name");
            anyhow::ensure!(
                !self.topics[..i].contains(topic),
                "topic {topic:?} is listed twice"
            );
        }
        for (topic, t) in self.topics.iter().zip(&self.thresholds) {
            anyhow::ensure!(
                (0.0..=1.0).contains(t),
                "the threshold of topic {topic:?} is {t}: thresholds are probabilities, from 0 to 1"
            );
        }
        anyhow::ensure!(
            !self.topic_head.is_empty()
                && !self
                    .topic_head
                    .starts_with(&format!("{}.", family.prefix())),
            "topic_head {:?} is not a tensor prefix of its own",
            self.topic_head
        );
        if let Some(c) = &self.calibration {
            c.validate(self.topics.len())?;
        }
        Ok(())
    }
}

/// The whole `config.json` of a saved model: loadable by Hugging Face transformers as its
/// family's `...ForTokenClassification`, with newstag's topics and windows in `newstag`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    #[serde(flatten)]
    pub bert: BertConfig,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    #[serde(default)]
    pub label2id: BTreeMap<String, usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newstag: Option<NewstagSection>,
}

impl ModelConfig {
    /// Checks the whole configuration on its own: the model type, the encoder's hyper-parameters
    /// and newstag's section (or, without it, that the default window fits the encoder).
    pub fn validate(&self) -> anyhow::Result<()> {
        let family = self.family()?;
        family.validate(&self.bert)?;
        let offset = family.position_offset(&self.bert);
        let positions = self.positions(family);
        let window = self.newstag.as_ref().map(|n| n.window);
        let window = window.unwrap_or_else(|| WindowConfig::within(positions));
        if offset > 0 {
            window.validate(positions).with_context(|| {
                format!(
                    "{} numbers positions from {offset}, so {positions} of its {} position embeddings hold tokens",
                    family.model_type(),
                    self.bert.max_position_embeddings
                )
            })?;
        } else if self.newstag.is_none() {
            window.validate(positions)?;
        }
        if let Some(n) = &self.newstag {
            n.validate(positions, family)?;
        }
        Ok(())
    }

    /// How many tokens a window of a `family` encoder may hold: its position embeddings, less
    /// those before the first token's (RoBERTa's `padding_idx + 1`).
    pub fn positions(&self, family: Family) -> usize {
        self.bert
            .max_position_embeddings
            .saturating_sub(family.position_offset(&self.bert))
    }

    /// The encoder family `model_type` names.
    pub fn family(&self) -> anyhow::Result<Family> {
        Family::from_model_type(&self.model_type).ok_or_else(|| {
            anyhow::anyhow!(
                "model_type {:?} is not supported (supported: {})",
                self.model_type,
                Family::supported()
            )
        })
    }

    /// The config of a newstag tagger on a `family` encoder: its `...ForTokenClassification` over
    /// `tags` with a topic head over `topics` (thresholds 0.5 until chosen on dev).
    pub fn for_tagger(
        family: Family,
        bert: BertConfig,
        tags: &TagSet,
        topics: &[String],
        window: WindowConfig,
    ) -> Self {
        ModelConfig {
            bert,
            architectures: vec![family.token_classification().into()],
            model_type: family.model_type().into(),
            id2label: tags.id2label(),
            label2id: tags.label2id(),
            newstag: Some(NewstagSection {
                version: env!("CARGO_PKG_VERSION").into(),
                topics: topics.to_vec(),
                thresholds: vec![0.5; topics.len()],
                window,
                topic_head: super::TOPIC_HEAD.into(),
                calibration: None,
                topic_pooling: TopicPooling::smooth_max(topics.len()),
            }),
        }
    }

    /// Reads a `config.json`'s JSON, in its family's own field names.
    pub fn from_json(mut value: serde_json::Value) -> Result<Self, serde_json::Error> {
        let mut modernbert = None;
        if let Some(obj) = value.as_object_mut() {
            let model_type = obj.get("model_type").and_then(|t| t.as_str());
            match model_type.and_then(Family::from_model_type) {
                Some(Family::DistilBert) => {
                    for (own, bert) in DISTILBERT_NAMES {
                        if let Some(v) = obj.remove(own) {
                            obj.insert(bert.into(), v);
                        }
                    }
                }
                // transformers' defaults, which a config may leave out.
                Some(Family::Electra) if !obj.contains_key("embedding_size") => {
                    obj.insert("embedding_size".into(), 128.into());
                }
                Some(Family::Roberta | Family::XlmRoberta) if !obj.contains_key("pad_token_id") => {
                    obj.insert("pad_token_id".into(), 1.into());
                }
                Some(Family::DebertaV2) => super::deberta_v2::insert_defaults(obj),
                Some(Family::ModernBert) => {
                    let own = super::modernbert::ModernBertConfig::read(obj)
                        .map_err(<serde_json::Error as serde::de::Error>::custom)?;
                    modernbert = Some(own);
                }
                _ => {}
            }
        }
        let mut config: Self = serde_json::from_value(value)?;
        config.bert.modernbert = modernbert;
        Ok(config)
    }

    /// The JSON of `config.json`, in the family's own field names (what transformers reads).
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut value = serde_json::to_value(self)?;
        if self.family().ok() == Some(Family::DistilBert) {
            if let Some(obj) = value.as_object_mut() {
                for name in [
                    "type_vocab_size",
                    "layer_norm_eps",
                    "position_embedding_type",
                ] {
                    obj.remove(name);
                }
                for (own, bert) in DISTILBERT_NAMES {
                    if let Some(v) = obj.remove(bert) {
                        obj.insert(own.into(), v);
                    }
                }
                obj.insert(
                    "sinusoidal_pos_embds".into(),
                    self.bert.sinusoidal_pos_embds.into(),
                );
            }
        }
        if let (Some(m), Some(obj)) = (&self.bert.modernbert, value.as_object_mut()) {
            m.write(obj);
        }
        Ok(value)
    }
}

/// DistilBERT's names of BERT's hyper-parameters.
const DISTILBERT_NAMES: [(&str, &str); 7] = [
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("n_heads", "num_attention_heads"),
    ("hidden_dim", "intermediate_size"),
    ("activation", "hidden_act"),
    ("dropout", "hidden_dropout_prob"),
    ("attention_dropout", "attention_probs_dropout_prob"),
];

fn default_model_type() -> String {
    "bert".into()
}

/// The BIO tags a token classifier predicts, indexed by output position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSet {
    tags: Vec<Tag>,
}

impl TagSet {
    /// `O` followed by `B-` and `I-` of each entity type, in the given order.
    pub fn from_types<S: AsRef<str>>(types: &[S]) -> Self {
        let mut tags = vec![Tag::Outside];
        for t in types {
            tags.push(Tag::Begin(t.as_ref().to_string()));
            tags.push(Tag::Inside(t.as_ref().to_string()));
        }
        TagSet { tags }
    }

    /// Reads Hugging Face's `id2label`; every type needs both its `B-` and `I-` tag, and `O` must exist.
    pub fn from_id2label(id2label: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !id2label.is_empty(),
            "config.json has no id2label: not a token classification model"
        );
        let mut by_id = BTreeMap::new();
        for (k, v) in id2label {
            let id: usize = k
                .parse()
                .map_err(|_| anyhow::anyhow!("id2label key {k:?} is not a number"))?;
            let tag = Tag::parse(v).map_err(|e| anyhow::anyhow!("id2label[{k}]: {e}"))?;
            if let Some((other, _)) = by_id.iter().find(|(_, t)| **t == tag) {
                anyhow::bail!("id2label gives {v:?} to both {other} and {id}");
            }
            anyhow::ensure!(
                by_id.insert(id, tag).is_none(),
                "id2label lists id {id} twice"
            );
        }
        anyhow::ensure!(
            by_id.keys().copied().eq(0..by_id.len()),
            "id2label ids must be 0..{} without gaps",
            by_id.len()
        );
        let tags: Vec<Tag> = by_id.into_values().collect();
        anyhow::ensure!(tags.contains(&Tag::Outside), "id2label has no \"O\" tag");
        let set = TagSet { tags };
        for t in set.types() {
            anyhow::ensure!(
                set.index(&Tag::Begin(t.clone())).is_some()
                    && set.index(&Tag::Inside(t.clone())).is_some(),
                "id2label has only one of B-{t} and I-{t}"
            );
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    pub fn index(&self, tag: &Tag) -> Option<usize> {
        self.tags.iter().position(|t| t == tag)
    }

    /// Entity types, in order of first appearance.
    pub fn types(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tags {
            if let Some(l) = t.label() {
                if !out.iter().any(|o| o == l) {
                    out.push(l.to_string());
                }
            }
        }
        out
    }

    pub fn id2label(&self) -> BTreeMap<String, String> {
        self.tags
            .iter()
            .enumerate()
            .map(|(i, t)| (i.to_string(), t.to_string()))
            .collect()
    }

    pub fn label2id(&self) -> BTreeMap<String, usize> {
        self.tags
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagset_roundtrips_through_id2label() {
        let set = TagSet::from_types(&["LOC", "PER"]);
        assert_eq!(set.len(), 5);
        assert_eq!(TagSet::from_id2label(&set.id2label()).unwrap(), set);
        let mut broken = set.id2label();
        broken.remove("4");
        assert!(TagSet::from_id2label(&broken)
            .unwrap_err()
            .to_string()
            .contains("only one of B-PER and I-PER"));
    }

    #[test]
    fn degenerate_configs_are_refused() {
        let mut c = BertConfig::tiny(10);
        c.num_attention_heads = 0;
        c.hidden_size = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("must be positive"));
    }

    #[test]
    fn reads_hugging_face_config_without_newstag_fields() {
        let json = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 32, "hidden_act": "gelu", "foo": 1}"#;
        let c: ModelConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.bert.layer_norm_eps, 1e-12);
        assert!(c.newstag.is_none());
        c.validate().unwrap();
        // Without newstag's section the window is the default one shrunk to the positions, which
        // must still hold one: with 4, windows would have no room for tokens.
        let few = json.replace(
            "\"max_position_embeddings\": 32",
            "\"max_position_embeddings\": 4",
        );
        let c: ModelConfig = serde_json::from_str(&few).unwrap();
        let err = format!("{:#}", c.validate().unwrap_err());
        assert!(err.contains("window of 4 sub-tokens is too small"), "{err}");
    }

    fn message(r: anyhow::Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn hyper_parameters_out_of_range_are_refused() {
        for eps in [0.0, -1e-12, f64::NAN, f64::INFINITY] {
            let mut c = BertConfig::tiny(10);
            c.layer_norm_eps = eps;
            assert!(
                message(c.validate()).contains("layer_norm_eps must be a positive number"),
                "{eps}"
            );
        }
        for p in [1.0, -0.1, f64::NAN] {
            let mut c = BertConfig::tiny(10);
            c.attention_probs_dropout_prob = p;
            assert!(message(c.validate())
                .contains("attention_probs_dropout_prob must be at least 0 and below 1"));
        }
        let mut c = BertConfig::tiny(10);
        c.intermediate_size = 0;
        assert!(message(c.validate()).contains("intermediate_size and type_vocab_size"));
        let json = r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 16, "max_position_embeddings": 32, "hidden_act": "swish"}"#;
        let err = serde_json::from_str::<ModelConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown variant `swish`, expected one of `gelu`, `gelu_new`, `relu`"),
            "{err}"
        );
    }

    #[test]
    fn topics_thresholds_and_model_type_are_checked() {
        let tags = TagSet::from_types(&["PER"]);
        let topics = ["energy".to_string(), "borders".to_string()];
        let good = ModelConfig::for_tagger(
            Family::Bert,
            BertConfig::tiny(10),
            &tags,
            &topics,
            WindowConfig::default(),
        );
        good.validate().unwrap();
        let with = |edit: &dyn Fn(&mut NewstagSection)| {
            let mut c = good.clone();
            edit(c.newstag.as_mut().unwrap());
            message(c.validate())
        };
        assert!(with(&|n| n.thresholds = vec![0.5]).contains("2 topics but 1 thresholds"));
        assert!(with(&|n| n.thresholds = vec![0.5, 1.5]).contains(
            "the threshold of topic \"borders\" is 1.5: thresholds are probabilities, from 0 to 1"
        ));
        assert!(with(&|n| n.thresholds = vec![f32::NAN, 0.5]).contains("is NaN"));
        assert!(
            with(&|n| n.topics[1] = "energy".into()).contains("topic \"energy\" is listed twice")
        );
        assert!(with(&|n| n.topics[0] = " ".into()).contains("topic 0 has an empty name"));
        assert!(with(&|n| n.window.max_tokens = 4).contains("too small"));
        let mut c = good.clone();
        c.model_type = "gpt2".into();
        assert_eq!(
            message(c.validate()),
            "model_type \"gpt2\" is not supported (supported: \"bert\", \"electra\", \"distilbert\", \"roberta\", \"xlm-roberta\", \"deberta-v2\", \"modernbert\")"
        );
    }

    #[test]
    fn families_read_and_write_their_own_field_names() {
        let json = serde_json::json!({"model_type": "distilbert", "vocab_size": 10, "dim": 8,
            "n_layers": 1, "n_heads": 2, "hidden_dim": 16, "activation": "gelu", "dropout": 0.0,
            "attention_dropout": 0.2, "max_position_embeddings": 32, "sinusoidal_pos_embds": true});
        let c = ModelConfig::from_json(json).unwrap();
        assert_eq!(c.family().unwrap(), Family::DistilBert);
        assert_eq!(
            (
                c.bert.hidden_size,
                c.bert.num_hidden_layers,
                c.bert.num_attention_heads
            ),
            (8, 1, 2)
        );
        assert_eq!(c.bert.intermediate_size, 16);
        assert_eq!(c.bert.attention_probs_dropout_prob, 0.2);
        assert!(c.bert.sinusoidal_pos_embds);
        let out = c.to_json().unwrap();
        for (key, value) in [
            ("dim", 8),
            ("n_layers", 1),
            ("n_heads", 2),
            ("hidden_dim", 16),
        ] {
            assert_eq!(out[key], value, "{out}");
        }
        for gone in [
            "hidden_size",
            "type_vocab_size",
            "layer_norm_eps",
            "hidden_act",
        ] {
            assert!(out.get(gone).is_none(), "{gone} in {out}");
        }
        assert_eq!(ModelConfig::from_json(out).unwrap(), c);

        // transformers' defaults where a config leaves them out.
        let bert_like = |t: &str| {
            serde_json::json!({"model_type": t, "vocab_size": 10, "hidden_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 32})
        };
        let electra = ModelConfig::from_json(bert_like("electra")).unwrap();
        assert_eq!(electra.bert.embedding_size, Some(128));
        let xlmr = ModelConfig::from_json(bert_like("xlm-roberta")).unwrap();
        assert_eq!(xlmr.bert.pad_token_id, 1);
        assert_eq!(Family::Roberta.position_offset(&xlmr.bert), 2);
    }

    #[test]
    fn a_tag_given_twice_in_id2label_is_refused() {
        let mut m = TagSet::from_types(&["PER"]).id2label();
        m.insert("3".into(), "B-PER".into());
        m.insert("4".into(), "I-PER".into());
        let err = TagSet::from_id2label(&m).unwrap_err().to_string();
        assert!(
            err.contains("id2label gives \"B-PER\" to both 1 and 3"),
            "{err}"
        );
    }
}
