//! DistilBERT (`model_type` `"distilbert"`): word and position embeddings without token types,
//! then post-LayerNorm layers under `transformer.layer.N` with their own names (`q_lin`,
//! `sa_layer_norm`, `ffn.lin1`, …) and no dropout after the attention's output projection
//! (transformers' `DistilBertModel`). With `sinusoidal_pos_embds` the position table is kept as
//! the checkpoint holds it and never trained, as transformers freezes it.

use super::bert::{EmbeddingOptions, Embeddings, Positions};
use super::config::BertConfig;
use super::encoder::{BertLayered, Mode};
use super::layers::{LayerNames, Layers};
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// The names of a DistilBERT layer's tensors (`transformer.layer.N.…`).
const LAYER_NAMES: LayerNames = LayerNames {
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
    attention_output_dropout: false,
};

/// `embeddings.*` and `transformer.layer.N.*`.
pub struct DistilBert {
    embeddings: Embeddings,
    transformer: Layers,
}

impl DistilBert {
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let options = EmbeddingOptions {
            size: config.hidden_size,
            token_types: false,
            positions: Positions::FromZero,
            frozen_positions: config.sinusoidal_pos_embds,
        };
        Ok(DistilBert {
            embeddings: Embeddings::load(config, options, vb.pp("embeddings"))?,
            transformer: Layers::new(config, &LAYER_NAMES, vb.pp("transformer").pp("layer"))?,
        })
    }
}

impl BertLayered for DistilBert {
    fn embed(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        self.embeddings.forward(ids, type_ids, mode)
    }

    fn layers(&self) -> &Layers {
        &self.transformer
    }
}
