//! DeBERTa-v2 (`model_type` `"deberta-v2"`: DeBERTa-v2, DeBERTa-v3 and mDeBERTa, under
//! `deberta.`), as transformers' `DebertaV2Model`: word embeddings (with absolute positions only
//! when `position_biased_input`, token types only when `type_vocab_size > 0`, and `embed_proj`
//! when `embedding_size` differs from the hidden size), then post-LayerNorm layers whose
//! self-attention adds to the content scores `q k^T` the disentangled relative-position scores:
//! content to position (`c2p`, the query against the keys of the relative embeddings) and position
//! to content (`p2c`, the key against their queries), with relative distances in logarithmic
//! buckets (`position_buckets`), all divided by `sqrt(head_size * (1 + number of score kinds))`.
//! The relative embeddings (`encoder.rel_embeddings`, LayerNorm'd with `norm_rel_ebd`) are shared
//! by every layer; with `share_att_key` they go through each layer's own query and key projections,
//! otherwise through its `pos_query_proj` and `pos_key_proj`.
//!
//! DeBERTa-v2's xlarge and xxlarge checkpoints add a convolution over the embedded input to the
//! first layer's output (`encoder.conv`, with `conv_kernel_size`, `conv_groups` and `conv_act`);
//! DeBERTa-v3 and mDeBERTa have none. An option newstag does not implement (an even kernel, an
//! activation other than tanh, GELU or ReLU, `attention_head_size` other than the hidden size over
//! the heads, `pos_att_type` other than c2p and p2c) is refused by name.
//!
//! The family runs on composed, differentiable candle ops in every mode (newstag's fused LayerNorm
//! and attention-probability kernels where they apply), so it has no prepared inference weights
//! and runs in f32 only.

use super::config::{Activation, BertConfig};
use super::encoder::{embedding, linear, param, Encoder, Kernels, LayerNorm, Mode, WEIGHT_INIT};
use super::layers::Prepared;
use crate::kernels as ops;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

mod options;

pub use options::{insert_defaults, validate, DebertaV2Options, PosAttType};
use options::{ConvActivation, ConvSettings, Settings};

/// transformers' `make_log_bucket_position` for one relative distance: exact within half a bucket
/// count, logarithmic beyond, computed in f32 as there.
fn log_bucket(relative: i64, buckets: i64, max_position: i64) -> i64 {
    let mid = buckets / 2;
    let abs = if relative < mid && relative > -mid {
        mid - 1
    } else {
        relative.abs()
    };
    if abs <= mid {
        return relative;
    }
    let ratio = ((max_position - 1) as f64 / mid as f64) as f32;
    let log_pos =
        ((abs as f32 / mid as f32).ln() / ratio.ln() * (mid - 1) as f32).ceil() + mid as f32;
    (log_pos * relative.signum() as f32) as i64
}

/// The flat indices that pick the `c2p` and `p2c` scores `[len, len]` out of the rows of scores
/// against every relative embedding, `[len, 2 * span]` flattened (transformers' `gather`s):
/// `c2p[i][j]` reads row `i` at the bucket of `i - j`, `p2c[i][j]` row `j` at the bucket of
/// `j - i` (its gather, then transpose).
fn relative_indices(len: usize, s: &Settings, device: &Device) -> Result<(Tensor, Tensor)> {
    let span = s.span as i64;
    let bucket = |q: usize, k: usize| {
        let r = q as i64 - k as i64;
        if s.buckets > 0 && s.max_relative_positions > 0 {
            log_bucket(r, s.buckets, s.max_relative_positions)
        } else {
            r
        }
    };
    let clamp = |p: i64| p.clamp(0, 2 * span - 1) as u32;
    let width = 2 * s.span as u32;
    let mut c2p = Vec::with_capacity(len * len);
    let mut p2c = Vec::with_capacity(len * len);
    for i in 0..len {
        for j in 0..len {
            c2p.push(i as u32 * width + clamp(bucket(i, j) + span));
            p2c.push(j as u32 * width + clamp(-bucket(j, i) + span));
        }
    }
    Ok((
        Tensor::from_vec(c2p, len * len, device)?,
        Tensor::from_vec(p2c, len * len, device)?,
    ))
}

/// The forward passes below take their parameters through these: detached at inference, where as
/// variables they would make every activation keep its inputs alive for a backward pass that
/// never comes.
fn apply(l: &Linear, x: &Tensor, train: bool) -> Result<Tensor> {
    Linear::new(param(l.weight(), train), l.bias().map(|b| param(b, train))).forward(x)
}

fn norm(n: &LayerNorm, x: &Tensor, mode: &Mode) -> Result<Tensor> {
    let train = mode.is_train();
    LayerNorm {
        weight: param(&n.weight, train),
        bias: param(&n.bias, train),
        eps: n.eps,
    }
    .forward(x, mode)
}

fn lookup(e: &Embedding, ids: &Tensor, train: bool) -> Result<Tensor> {
    Embedding::new(param(e.embeddings(), train), e.hidden_size()).forward(ids)
}

/// `embeddings.*`.
struct Embeddings {
    word_embeddings: Embedding,
    position_embeddings: Option<Embedding>,
    token_type_embeddings: Option<Embedding>,
    embed_proj: Option<Linear>,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(c: &BertConfig, s: &Settings, vb: VarBuilder) -> Result<Self> {
        let size = c.embedding_size.unwrap_or(c.hidden_size);
        let embed_proj = match size != c.hidden_size {
            true => Some(Linear::new(
                vb.pp("embed_proj")
                    .get_with_hints((c.hidden_size, size), "weight", WEIGHT_INIT)?,
                None,
            )),
            false => None,
        };
        Ok(Embeddings {
            word_embeddings: embedding(c.vocab_size, size, vb.pp("word_embeddings"))?,
            position_embeddings: match s.position_biased_input {
                true => Some(embedding(
                    c.max_position_embeddings,
                    size,
                    vb.pp("position_embeddings"),
                )?),
                false => None,
            },
            token_type_embeddings: match c.type_vocab_size {
                0 => None,
                n => Some(embedding(n, size, vb.pp("token_type_embeddings"))?),
            },
            embed_proj,
            layer_norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// `mask`: `[batch, len, 1]`, 1 on tokens (padding comes out as zeros, as in transformers).
    fn forward(
        &self,
        ids: &Tensor,
        types: &Tensor,
        mask: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let train = mode.is_train();
        let mut x = lookup(&self.word_embeddings, ids, train)?;
        if let Some(p) = &self.position_embeddings {
            let positions = Tensor::arange(0u32, len as u32, ids.device())?;
            x = x.broadcast_add(&lookup(p, &positions, train)?)?;
        }
        if let Some(t) = &self.token_type_embeddings {
            x = (x + lookup(t, types, train)?)?;
        }
        if let Some(proj) = &self.embed_proj {
            x = apply(proj, &x, train)?;
        }
        let x = norm(&self.layer_norm, &x, mode)?.broadcast_mul(mask)?;
        mode.dropout(&x)
    }
}

/// `encoder.layer.N.*`.
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    /// `attention.self.pos_key_proj` (c2p without `share_att_key`).
    pos_key: Option<Linear>,
    /// `attention.self.pos_query_proj` (p2c without `share_att_key`).
    pos_query: Option<Linear>,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    activation: Activation,
}

impl Layer {
    fn load(c: &BertConfig, s: &Settings, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        let attention = vb.pp("attention").pp("self");
        let separate = s.relative && !s.share_att_key;
        let optional = |wanted: bool, name: &str| match wanted {
            true => linear(h, h, attention.pp(name)).map(Some),
            false => Ok(None),
        };
        Ok(Layer {
            query: linear(h, h, attention.pp("query_proj"))?,
            key: linear(h, h, attention.pp("key_proj"))?,
            value: linear(h, h, attention.pp("value_proj"))?,
            pos_key: optional(separate && s.c2p, "pos_key_proj")?,
            pos_query: optional(separate && s.p2c, "pos_query_proj")?,
            attention_out: linear(h, h, vb.pp("attention.output.dense"))?,
            attention_norm: LayerNorm::new(h, eps, vb.pp("attention.output.LayerNorm"))?,
            intermediate: linear(h, c.intermediate_size, vb.pp("intermediate.dense"))?,
            output: linear(c.intermediate_size, h, vb.pp("output.dense"))?,
            output_norm: LayerNorm::new(h, eps, vb.pp("output.LayerNorm"))?,
            heads: c.num_attention_heads,
            activation: c.hidden_act,
        })
    }

    /// `[rows, hidden]` (or `[batch, rows, hidden]`) as heads `[batch or 1, heads, rows, size]`.
    fn split(&self, t: Tensor) -> Result<Tensor> {
        let t = match t.rank() {
            2 => t.unsqueeze(0)?,
            _ => t,
        };
        let (b, n, h) = t.dims3()?;
        t.reshape((b, n, self.heads, h / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// The relative scores `scores` `[batch, heads, len, 2 * span]` against every relative
    /// embedding, picked at each pair's bucket by `index` (from [`relative_indices`]).
    fn pick(scores: &Tensor, index: &Tensor) -> Result<Tensor> {
        let (b, heads, len, width) = scores.dims4()?;
        scores
            .reshape((b * heads, len * width))?
            .index_select(index, 1)?
            .reshape((b, heads, len, len))
    }

    /// `x`: `[batch, len, hidden]`; `mask_bias`: `[batch, 1, 1, len]`, 0 on tokens and a large
    /// negative number on padding; `relative`: the relative embeddings and indices, when the
    /// model has relative attention.
    fn forward(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        relative: Option<(&Tensor, &(Tensor, Tensor))>,
        s: &Settings,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, len, h) = x.dims3()?;
        let train = mode.is_train();
        let q = self.split(apply(&self.query, x, train)?)?;
        let k = self.split(apply(&self.key, x, train)?)?;
        let v = self.split(apply(&self.value, x, train)?)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some((rel, (c2p_index, p2c_index))) = relative {
            // transformers' `pos_dropout`, drawn by each layer.
            let rel = mode.dropout(rel)?;
            if s.c2p {
                let proj = self.pos_key.as_ref().unwrap_or(&self.key);
                let pos_key = self.split(apply(proj, &rel, train)?)?;
                let c2p = q.broadcast_matmul(&pos_key.t()?)?;
                scores = (scores + Self::pick(&c2p, c2p_index)?)?;
            }
            if s.p2c {
                let proj = self.pos_query.as_ref().unwrap_or(&self.query);
                let pos_query = self.split(apply(proj, &rel, train)?)?;
                let p2c = k.broadcast_matmul(&pos_query.t()?)?;
                scores = (scores + Self::pick(&p2c, p2c_index)?)?;
            }
        }
        let head_size = h / self.heads;
        let scale = 1.0 / ((head_size * s.scale_factor) as f64).sqrt();
        let (p, seed) = mode.draw(true);
        let probs = match mode.kernels() {
            Kernels::Infer => {
                candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(mask_bias)?)?
            }
            Kernels::Fused => ops::attention_probs(&scores, mask_bias, scale, p, seed)?,
            Kernels::Reference => {
                ops::attention_probs_reference(&scores, mask_bias, scale, p, seed)?
            }
        };
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
        let attended = mode.dropout(&apply(&self.attention_out, &context, train)?)?;
        let x = norm(&self.attention_norm, &(attended + x)?, mode)?;
        let inner = apply(&self.intermediate, &x, train)?;
        let inner = match self.activation {
            Activation::Gelu => inner.gelu_erf()?,
            Activation::GeluNew => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        let out = mode.dropout(&apply(&self.output, &inner, train)?)?;
        norm(&self.output_norm, &(out + x)?, mode)
    }
}

/// `encoder.conv.*`: a convolution over the embedded input, added to the first layer's output
/// (transformers' `ConvLayer`).
struct Conv {
    weight: Tensor,
    bias: Tensor,
    layer_norm: LayerNorm,
    settings: ConvSettings,
}

impl Conv {
    fn load(c: &BertConfig, settings: ConvSettings, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        let shape = (h, h / settings.groups, settings.kernel);
        Ok(Conv {
            weight: vb.pp("conv").get_with_hints(shape, "weight", WEIGHT_INIT)?,
            bias: vb
                .pp("conv")
                .get_with_hints(h, "bias", candle_nn::Init::Const(0.0))?,
            layer_norm: LayerNorm::new(h, c.layer_norm_eps, vb.pp("LayerNorm"))?,
            settings,
        })
    }

    /// `LayerNorm(residual + act(dropout(conv(input))))` with padding rows zeroed, for the
    /// embedded `input` and the first layer's output `residual` (`[batch, len, hidden]`); `mask`
    /// as for [`Embeddings::forward`].
    fn forward(
        &self,
        input: &Tensor,
        residual: &Tensor,
        mask: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let train = mode.is_train();
        let s = self.settings;
        let h = self.bias.dim(0)?;
        let out = input
            .transpose(1, 2)?
            .contiguous()?
            .conv1d(
                &param(&self.weight, train),
                (s.kernel - 1) / 2,
                1,
                1,
                s.groups,
            )?
            .broadcast_add(&param(&self.bias, train).reshape((1, h, 1))?)?
            .transpose(1, 2)?
            .broadcast_mul(mask)?;
        let out = mode.dropout(&out)?;
        let out = match s.activation {
            ConvActivation::Tanh => out.tanh()?,
            ConvActivation::Gelu => out.gelu_erf()?,
            ConvActivation::GeluNew => out.gelu()?,
            ConvActivation::Relu => out.relu()?,
        };
        norm(&self.layer_norm, &(residual + out)?, mode)?.broadcast_mul(mask)
    }
}

/// The DeBERTa-v2 encoder: `embeddings.*` and `encoder.*` (its layers, `rel_embeddings` and
/// their `LayerNorm`, the optional `conv`).
pub struct DebertaV2 {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    conv: Option<Conv>,
    rel_embeddings: Option<Embedding>,
    rel_norm: Option<LayerNorm>,
    settings: Settings,
}

impl DebertaV2 {
    /// Builds the encoder from tensors under `vb` (the `deberta.` prefix).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let s = Settings::new(config).map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
        let encoder = vb.pp("encoder");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(config, &s, encoder.pp("layer").pp(i)))
            .collect::<Result<_>>()?;
        let rel_embeddings = match s.relative {
            true => Some(embedding(
                2 * s.span,
                config.hidden_size,
                encoder.pp("rel_embeddings"),
            )?),
            false => None,
        };
        let rel_norm = match s.norm_rel_ebd {
            true => Some(LayerNorm::new(
                config.hidden_size,
                config.layer_norm_eps,
                encoder.pp("LayerNorm"),
            )?),
            false => None,
        };
        let conv = match s.conv {
            Some(settings) => Some(Conv::load(config, settings, encoder.pp("conv"))?),
            None => None,
        };
        Ok(DebertaV2 {
            embeddings: Embeddings::load(config, &s, vb.pp("embeddings"))?,
            layers,
            conv,
            rel_embeddings,
            rel_norm,
            settings: s,
        })
    }
}

impl Encoder for DebertaV2 {
    fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        _prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let mask = attention_mask.to_dtype(DType::F32)?;
        let rows_mask = mask.unsqueeze(2)?;
        let embedded = self.embeddings.forward(ids, type_ids, &rows_mask, mode)?;
        let mut x = embedded.clone();
        let mask_bias = super::encoder::mask_bias(attention_mask)?;
        let relative = match &self.rel_embeddings {
            Some(table) => {
                let rel = param(table.embeddings(), mode.is_train());
                let rel = match &self.rel_norm {
                    Some(n) => norm(n, &rel, mode)?,
                    None => rel,
                };
                Some((rel, relative_indices(len, &self.settings, ids.device())?))
            }
            None => None,
        };
        let relative = relative.as_ref().map(|(r, i)| (r, i));
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, &mask_bias, relative, &self.settings, mode)?;
            if let Some(conv) = self.conv.as_ref().filter(|_| i == 0) {
                x = conv.forward(&embedded, &x, &rows_mask, mode)?;
            }
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_buckets_are_exact_near_and_logarithmic_far() {
        // transformers' make_log_bucket_position(torch.arange(0, 65), 8, 64).
        let small = [
            0, 1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
            7, 7, 7, 7, 7, 7, 8,
        ];
        for (r, want) in small.iter().enumerate() {
            assert_eq!(log_bucket(r as i64, 8, 64), *want, "{r}");
            assert_eq!(log_bucket(-(r as i64), 8, 64), -want, "-{r}");
        }
        // DeBERTa-v3's 256 buckets over 512 positions: make_log_bucket_position(torch.arange(250,
        // 600, 7), 256, 512).
        let v3 = [
            190, 192, 195, 197, 200, 202, 204, 206, 208, 211, 213, 215, 216, 218, 220, 222, 224,
            226, 227, 229, 231, 232, 234, 236, 237, 239, 240, 242, 243, 244, 246, 247, 249, 250,
            251, 253, 254, 255, 256, 258, 259, 260, 261, 262, 264, 265, 266, 267, 268, 269,
        ];
        for (i, want) in v3.iter().enumerate() {
            let r = 250 + 7 * i as i64;
            assert_eq!(log_bucket(r, 256, 512), *want, "{r}");
        }
        assert_eq!(log_bucket(127, 256, 512), 127);
    }
}
