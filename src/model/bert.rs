//! BERT (`model_type` `"bert"`): embeddings of words, positions and token types, then the shared
//! post-LayerNorm transformer layers ([`Layers`]) under `encoder.layer.N`. The embeddings here
//! also serve the BERT-shaped families (ELECTRA, RoBERTa, DistilBERT), which differ in sizes,
//! position ids and token types only.

use super::config::BertConfig;
use super::encoder::{embedding, BertLayered, Encoder, LayerNorm};
use super::layers::{LayerNames, Layers};
use super::Precision;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

pub use super::encoder::{Dropout, Mode, ParamGrads};
pub use super::layers::{Prepared, PreparedPath};

/// The names of a BERT layer's tensors (`encoder.layer.N.…`), shared by ELECTRA and RoBERTa.
pub const BERT_LAYER_NAMES: LayerNames = LayerNames {
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
    attention_output_dropout: true,
};

/// How a family numbers positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// 0, 1, 2, … in every row (BERT, ELECTRA, DistilBERT).
    FromZero,
    /// RoBERTa's: `padding_idx + 1`, `+ 2`, … over the tokens that are not padding, and
    /// `padding_idx` on padding (transformers' `create_position_ids_from_input_ids`).
    AfterPadding { padding_idx: u32 },
}

/// RoBERTa's position ids `[batch, len]` for token ids `[batch, len]`.
fn position_ids_after_padding(ids: &Tensor, padding_idx: u32) -> Result<Tensor> {
    let (b, len) = ids.dims2()?;
    let rows = ids.to_dtype(candle_core::DType::U32)?.to_vec2::<u32>()?;
    let mut out = Vec::with_capacity(b * len);
    for row in rows {
        let mut seen = 0;
        for id in row {
            if id == padding_idx {
                out.push(padding_idx);
            } else {
                seen += 1;
                out.push(padding_idx + seen);
            }
        }
    }
    Tensor::from_vec(out, (b, len), ids.device())
}

/// What sets a family's embeddings apart from BERT's.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingOptions {
    /// The embeddings' width (ELECTRA's `embedding_size`; the hidden size elsewhere).
    pub size: usize,
    /// Whether token-type embeddings exist (not in DistilBERT).
    pub token_types: bool,
    pub positions: Positions,
    /// Position embeddings kept as loaded, never trained (DistilBERT's `sinusoidal_pos_embds`).
    pub frozen_positions: bool,
}

impl EmbeddingOptions {
    /// BERT's: hidden-size embeddings with token types, positions from 0.
    pub fn bert(c: &BertConfig) -> Self {
        EmbeddingOptions {
            size: c.hidden_size,
            token_types: true,
            positions: Positions::FromZero,
            frozen_positions: false,
        }
    }
}

/// `embeddings.*`: word, position and token-type embeddings, summed, LayerNorm, dropout.
pub struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Option<Embedding>,
    layer_norm: LayerNorm,
    options: EmbeddingOptions,
}

impl Embeddings {
    pub fn load(c: &BertConfig, options: EmbeddingOptions, vb: VarBuilder) -> Result<Self> {
        let size = options.size;
        let token_type_embeddings = match options.token_types {
            true => Some(embedding(
                c.type_vocab_size,
                size,
                vb.pp("token_type_embeddings"),
            )?),
            false => None,
        };
        Ok(Embeddings {
            word_embeddings: embedding(c.vocab_size, size, vb.pp("word_embeddings"))?,
            position_embeddings: embedding(
                c.max_position_embeddings,
                size,
                vb.pp("position_embeddings"),
            )?,
            token_type_embeddings,
            layer_norm: LayerNorm::new(size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
            options,
        })
    }

    pub fn forward(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let mut x = self.word_embeddings.forward(ids)?;
        if let Some(types) = &self.token_type_embeddings {
            x = x.add(&types.forward(type_ids)?)?;
        }
        x = match self.options.positions {
            // One row of positions, broadcast: what BERT has always done.
            Positions::FromZero => {
                let positions = Tensor::arange(0u32, len as u32, ids.device())?;
                x.broadcast_add(&self.position_table()?.forward(&positions)?)?
            }
            Positions::AfterPadding { padding_idx } => {
                let positions = position_ids_after_padding(ids, padding_idx)?;
                x.add(&self.position_table()?.forward(&positions)?)?
            }
        };
        let x = self.layer_norm.forward(&x, mode)?;
        mode.dropout(&x)
    }

    fn position_table(&self) -> Result<Embedding> {
        Ok(match self.options.frozen_positions {
            true => Embedding::new(
                self.position_embeddings.embeddings().detach(),
                self.options.size,
            ),
            false => self.position_embeddings.clone(),
        })
    }
}

/// The BERT encoder (no pooler): `embeddings.*` and `encoder.layer.N.*`.
pub struct Bert {
    embeddings: Embeddings,
    encoder: Layers,
}

impl Bert {
    /// Builds the encoder from tensors under `vb` (`embeddings.*`, `encoder.layer.N.*`).
    pub fn new(config: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Bert {
            embeddings: Embeddings::load(
                config,
                EmbeddingOptions::bert(config),
                vb.pp("embeddings"),
            )?,
            encoder: Layers::new(config, &BERT_LAYER_NAMES, vb.pp("encoder").pp("layer"))?,
        })
    }

    /// [`Encoder::prepare_for`], callable without the trait in scope.
    pub fn prepare_for(&self, precision: Precision, path: PreparedPath) -> Result<Prepared> {
        Encoder::prepare_for(self, precision, path)
    }

    /// [`Encoder::forward`], callable without the trait in scope.
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        Encoder::forward(self, ids, type_ids, attention_mask, prepared, mode)
    }
}

impl BertLayered for Bert {
    fn embed(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        self.embeddings.forward(ids, type_ids, mode)
    }

    fn layers(&self) -> &Layers {
        &self.encoder
    }
}
