//! ELECTRA discriminators (`model_type` `"electra"`): BERT's layers under `electra.`, with
//! embeddings of width `embedding_size` projected to the hidden size by `embeddings_project` when
//! the two differ (transformers' `ElectraModel`).

use super::bert::{EmbeddingOptions, Embeddings, BERT_LAYER_NAMES};
use super::config::BertConfig;
use super::encoder::{linear, BertLayered, Mode};
use super::layers::Layers;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// `embeddings.*`, `embeddings_project.*` (when `embedding_size != hidden_size`) and
/// `encoder.layer.N.*`.
pub struct Electra {
    embeddings: Embeddings,
    embeddings_project: Option<Linear>,
    encoder: Layers,
}

impl Electra {
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let size = config.embedding_size.unwrap_or(config.hidden_size);
        let options = EmbeddingOptions {
            size,
            ..EmbeddingOptions::bert(config)
        };
        let embeddings_project = match size != config.hidden_size {
            true => Some(linear(
                size,
                config.hidden_size,
                vb.pp("embeddings_project"),
            )?),
            false => None,
        };
        Ok(Electra {
            embeddings: Embeddings::load(config, options, vb.pp("embeddings"))?,
            embeddings_project,
            encoder: Layers::new(config, &BERT_LAYER_NAMES, vb.pp("encoder").pp("layer"))?,
        })
    }
}

impl BertLayered for Electra {
    fn embed(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let x = self.embeddings.forward(ids, type_ids, mode)?;
        match &self.embeddings_project {
            Some(project) => project.forward(&x),
            None => Ok(x),
        }
    }

    fn layers(&self) -> &Layers {
        &self.encoder
    }
}
