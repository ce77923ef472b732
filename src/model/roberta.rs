//! RoBERTa and XLM-RoBERTa (`model_type` `"roberta"`, `"xlm-roberta"`; both under `roberta.`):
//! BERT's layers, with positions counted from `padding_idx + 1` over the tokens that are not
//! padding (transformers' `RobertaEmbeddings`). Their single token type is the one newstag's
//! single-segment windows use anyway.

use super::bert::{EmbeddingOptions, Embeddings, Positions, BERT_LAYER_NAMES};
use super::config::BertConfig;
use super::encoder::{BertLayered, Mode};
use super::layers::Layers;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// `embeddings.*` and `encoder.layer.N.*`.
pub struct Roberta {
    embeddings: Embeddings,
    encoder: Layers,
}

impl Roberta {
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let options = EmbeddingOptions {
            positions: Positions::AfterPadding {
                padding_idx: config.pad_token_id,
            },
            ..EmbeddingOptions::bert(config)
        };
        Ok(Roberta {
            embeddings: Embeddings::load(config, options, vb.pp("embeddings"))?,
            encoder: Layers::new(config, &BERT_LAYER_NAMES, vb.pp("encoder").pp("layer"))?,
        })
    }
}

impl BertLayered for Roberta {
    fn embed(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        self.embeddings.forward(ids, type_ids, mode)
    }

    fn layers(&self) -> &Layers {
        &self.encoder
    }
}
