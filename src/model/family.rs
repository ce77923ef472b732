//! The encoder families newstag loads, chosen by `model_type` in `config.json`: what each calls
//! its encoder's tensors, which checkpoint tensors it may leave unused, and which transformers
//! class its saved directory loads as.

use super::config::BertConfig;
use super::encoder::Encoder;
use candle_core::Result;
use candle_nn::VarBuilder;

/// An encoder architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bert,
    Electra,
    DistilBert,
    Roberta,
    XlmRoberta,
    DebertaV2,
    ModernBert,
}

impl Family {
    /// Every family, in the order messages list them.
    pub const ALL: [Family; 7] = [
        Family::Bert,
        Family::Electra,
        Family::DistilBert,
        Family::Roberta,
        Family::XlmRoberta,
        Family::DebertaV2,
        Family::ModernBert,
    ];

    /// The family a `model_type` names, if newstag supports it.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// `model_type` in `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Electra => "electra",
            Family::DistilBert => "distilbert",
            Family::Roberta => "roberta",
            Family::XlmRoberta => "xlm-roberta",
            Family::DebertaV2 => "deberta-v2",
            Family::ModernBert => "modernbert",
        }
    }

    /// The architecture's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "BERT",
            Family::Electra => "ELECTRA",
            Family::DistilBert => "DistilBERT",
            Family::Roberta => "RoBERTa",
            Family::XlmRoberta => "XLM-RoBERTa",
            Family::DebertaV2 => "DeBERTa-v2",
            Family::ModernBert => "ModernBERT",
        }
    }

    /// The transformers class a saved newstag model loads as.
    pub fn token_classification(self) -> &'static str {
        match self {
            Family::Bert => "BertForTokenClassification",
            Family::Electra => "ElectraForTokenClassification",
            Family::DistilBert => "DistilBertForTokenClassification",
            Family::Roberta => "RobertaForTokenClassification",
            Family::XlmRoberta => "XLMRobertaForTokenClassification",
            Family::DebertaV2 => "DebertaV2ForTokenClassification",
            Family::ModernBert => "ModernBertForTokenClassification",
        }
    }

    /// The prefix of the encoder's tensors in a task model's checkpoint (transformers'
    /// `base_model_prefix`).
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Electra => "electra",
            Family::DistilBert => "distilbert",
            Family::Roberta | Family::XlmRoberta => "roberta",
            Family::DebertaV2 => "deberta",
            Family::ModernBert => "model",
        }
    }

    /// The first names of the encoder's tensors in a bare encoder's checkpoint (a `BertModel`
    /// saved without the prefix).
    pub fn bare_roots(self) -> &'static [&'static str] {
        match self {
            Family::Bert | Family::Roberta | Family::XlmRoberta => {
                &["embeddings.", "encoder.", "pooler."]
            }
            Family::Electra => &["embeddings.", "embeddings_project.", "encoder."],
            Family::DistilBert => &["embeddings.", "transformer."],
            Family::DebertaV2 => &["embeddings.", "encoder."],
            Family::ModernBert => &["embeddings.", "layers.", "final_norm."],
        }
    }

    /// Where the encoder's layers lie: `PREFIX.encoder.layer.` and the like (layer N is under
    /// this plus `N.`).
    pub fn layer_prefix(self) -> String {
        match self {
            Family::DistilBert => format!("{}.transformer.layer.", self.prefix()),
            Family::ModernBert => format!("{}.layers.", self.prefix()),
            _ => format!("{}.encoder.layer.", self.prefix()),
        }
    }

    /// The canonical name of a checkpoint tensor: a bare encoder's names get the family's
    /// prefix, and old checkpoints' LayerNorm `gamma`/`beta` become `weight`/`bias`.
    pub fn canonical_name(self, name: &str) -> String {
        let mut n = name.to_string();
        for (old, new) in [(".gamma", ".weight"), (".beta", ".bias")] {
            if n.contains("LayerNorm") && n.ends_with(old) {
                n.truncate(n.len() - old.len());
                n.push_str(new);
            }
        }
        if self.bare_roots().iter().any(|r| n.starts_with(r)) {
            n = format!("{}.{n}", self.prefix());
        }
        n
    }

    /// Encoder tensors a checkpoint may hold that the model leaves unused, by canonical name
    /// prefix:
    /// - `PREFIX.pooler.`: the first token's pooler of a bare encoder or pre-training checkpoint,
    ///   which token classification has no use for (transformers drops it too);
    /// - `PREFIX.embeddings.position_ids`, `PREFIX.embeddings.token_type_ids`: index buffers (not
    ///   weights) that transformers checkpoints before 4.31 carry;
    /// - DeBERTa-v2's `PREFIX.embeddings.position_embeddings.` (which transformers ignores on
    ///   load): without `position_biased_input` the model has no use for them (with it, they are
    ///   required like any other).
    pub fn optional_tensors(self) -> Vec<String> {
        let p = self.prefix();
        let mut optional = vec![
            format!("{p}.pooler."),
            format!("{p}.embeddings.position_ids"),
            format!("{p}.embeddings.token_type_ids"),
        ];
        if self == Family::DebertaV2 {
            optional.push(format!("{p}.embeddings.position_embeddings."));
        }
        optional
    }

    /// How many position embeddings come before the first token's (RoBERTa's `padding_idx + 1`).
    pub fn position_offset(self, config: &BertConfig) -> usize {
        match self {
            Family::Roberta | Family::XlmRoberta => config.pad_token_id as usize + 1,
            _ => 0,
        }
    }

    /// Builds the encoder from tensors under `vb` (the family's prefix).
    pub fn load(self, vb: VarBuilder, config: &BertConfig) -> Result<Box<dyn Encoder>> {
        Ok(match self {
            Family::Bert => Box::new(super::bert::Bert::new(config, vb)?),
            Family::Electra => Box::new(super::electra::Electra::load(vb, config)?),
            Family::DistilBert => Box::new(super::distilbert::DistilBert::load(vb, config)?),
            Family::Roberta | Family::XlmRoberta => {
                Box::new(super::roberta::Roberta::load(vb, config)?)
            }
            Family::DebertaV2 => Box::new(super::deberta_v2::DebertaV2::load(vb, config)?),
            Family::ModernBert => Box::new(super::modernbert::ModernBert::load(vb, config)?),
        })
    }

    /// Whether the family runs inference in bf16 and int8 as well as f32: families on BERT's
    /// layers have the prepared CPU kernels of [`super::layers::Prepared`].
    pub fn reduced_precision(self) -> bool {
        match self {
            Family::Bert
            | Family::Electra
            | Family::DistilBert
            | Family::Roberta
            | Family::XlmRoberta => true,
            Family::DebertaV2 | Family::ModernBert => false,
        }
    }

    /// Checks a `config.json`'s hyper-parameters for this family.
    pub fn validate(self, config: &BertConfig) -> anyhow::Result<()> {
        match self {
            Family::DebertaV2 => super::deberta_v2::validate(config),
            _ => config.validate(),
        }
    }

    /// The transform a family's `...ForTokenClassification` applies to the hidden states before
    /// its `classifier`, from tensors under `vb` (the checkpoint's root): ModernBERT's `head`;
    /// `None` for families whose classifier reads the hidden states themselves.
    pub fn token_head(
        self,
        vb: VarBuilder,
        config: &BertConfig,
    ) -> Result<Option<super::modernbert::PredictionHead>> {
        match self {
            Family::ModernBert => Ok(Some(super::modernbert::PredictionHead::load(
                vb.pp("head"),
                config,
            )?)),
            _ => Ok(None),
        }
    }

    /// The supported `model_type`s, quoted, for messages.
    pub fn supported() -> String {
        Self::ALL
            .map(|f| format!("{:?}", f.model_type()))
            .join(", ")
    }
}
