//! ModernBERT (`model_type` `"modernbert"`; under `model.`, transformers' `ModernBertModel`):
//! token embeddings and a LayerNorm (no positions, no token types), then pre-norm layers
//! `layers.N` of rotary self-attention (`attn.Wqkv`, `attn.Wo`; layer 0 has no `attn_norm`) and
//! a GeGLU feed-forward (`mlp.Wi` makes the input and its gate, `mlp.Wo`), and `final_norm`.
//! Layers alternate between global attention and local attention over a sliding window of
//! `local_attention / 2` tokens each side, each kind with its own rotary base
//! (`global_rope_theta`, `local_rope_theta`). LayerNorms and linear layers have biases only where
//! `norm_bias`, `attention_bias` and `mlp_bias` say so (ModernBERT's own checkpoints have none).
//!
//! Its `ModernBertForTokenClassification` has a `head` (dense, activation, LayerNorm) before its
//! `classifier`: newstag loads and trains it as part of its entity head ([`PredictionHead`]), so
//! a model transformers saved tags as it does there, and a model newstag saves loads there.
//!
//! The forward pass is made of differentiable candle ops and newstag's kernels with backward
//! passes ([`crate::kernels`]), the same in training and inference: there are no prepared
//! inference weights ([`Prepared::none`]), so ModernBERT runs in f32 only. Inference runs each
//! window of a batch on its own, at its own length, so that a window's output cannot depend on
//! what it is batched with: in a padded batch its products and softmax rows are longer, and a
//! matrix multiply may pick other kernels, hence other summation orders, for other shapes (as
//! for the heads' [`ops::linear_rows`]).
//!
//! Training has one hidden dropout rate, `mlp_dropout` (and `attention_dropout` on attention):
//! it is applied after the embeddings too when `embedding_dropout` is not 0, and before the
//! classifier, where transformers uses `classifier_dropout` (read and saved, not applied; its
//! checkpoints set 0 for the others and 0 or 0.1 there).

use super::config::{Activation, BertConfig};
use super::encoder::{param, Encoder, Kernels, Mode, WEIGHT_INIT};
use super::layers::{prefix_lengths, Prepared};
use crate::kernels as ops;
use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

pub use super::modernbert_config::{AttentionKind, ModernBertConfig};

/// ModernBERT's own hyper-parameters, which [`super::config::ModelConfig::from_json`] reads.
fn own_config(config: &BertConfig) -> Result<&ModernBertConfig> {
    config.modernbert.as_ref().ok_or_else(|| {
        candle_core::Error::Msg("a ModernBERT model without ModernBERT's configuration".into())
    })
}

/// A linear layer, its bias optional.
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    fn new(input: usize, output: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Dense {
            weight: vb.get_with_hints((output, input), "weight", WEIGHT_INIT)?,
            bias: match bias {
                true => Some(vb.get_with_hints(output, "bias", Init::Const(0.0))?),
                false => None,
            },
        })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = x.broadcast_matmul(&param(&self.weight, train).t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&param(b, train)),
            None => Ok(y),
        }
    }
}

/// LayerNorm over the last dimension, its bias optional (zeros without one).
struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    zeros: Tensor,
    eps: f64,
}

impl Norm {
    fn new(size: usize, eps: f64, bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Norm {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            bias: match bias {
                true => Some(vb.get_with_hints(size, "bias", Init::Const(0.0))?),
                false => None,
            },
            zeros: Tensor::zeros(size, DType::F32, vb.device())?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let train = mode.is_train();
        let w = param(&self.weight, train);
        let b = self
            .bias
            .as_ref()
            .map_or(self.zeros.clone(), |b| param(b, train));
        match mode.kernels() {
            Kernels::Infer if x.is_contiguous() => {
                candle_nn::ops::layer_norm(x, &w, &b, self.eps as f32)
            }
            Kernels::Reference => ops::layer_norm_reference(x, &w, &b, self.eps),
            _ => ops::layer_norm(x, &w, &b, self.eps),
        }
    }
}

/// An activation, through newstag's kernels where it has them.
fn activate(x: &Tensor, activation: Activation, mode: &Mode) -> Result<Tensor> {
    match activation {
        Activation::Gelu if mode.kernels() == Kernels::Reference => x.gelu_erf(),
        Activation::Gelu => ops::gelu_erf(x),
        Activation::GeluNew => x.gelu(),
        Activation::Relu => x.relu(),
    }
}

/// Rotary position embeddings of one base: the inverse frequencies of a head's dimension pairs.
struct Rotary {
    inv_freq: Vec<f32>,
}

impl Rotary {
    /// As transformers computes them, in `f32`: `1 / theta^(2i / head_size)`.
    fn new(theta: f64, head_size: usize) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..head_size / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_size as f32))
            .collect();
        Rotary { inv_freq }
    }

    /// `cos` and `sin` `[len, head_size]` of positions `0..len` (each frequency twice, as the
    /// two halves of a head rotate together).
    fn tables(&self, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let (mut cos, mut sin) = (Vec::with_capacity(len * 2 * half), Vec::new());
        sin.reserve(len * 2 * half);
        for pos in 0..len {
            for _ in 0..2 {
                for f in &self.inv_freq {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, 2 * half), device)?,
            Tensor::from_vec(sin, (len, 2 * half), device)?,
        ))
    }
}

/// `x cos + rotate_half(x) sin` for `x` `[batch, heads, len, head_size]`, where `rotate_half`
/// makes `(-x2, x1)` of the halves `(x1, x2)`.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// What every layer of one forward pass shares: the padding mask and, per attention kind, the
/// rotary tables and the local window's band.
struct Context {
    /// `[batch, 1, 1, len]`: 0 on tokens, a large negative number on padding.
    mask_bias: Tensor,
    global: (Tensor, Tensor),
    local: (Tensor, Tensor),
    /// `[len, len]`: 0 within `window` tokens of the query, a large negative number beyond.
    band: Tensor,
}

/// A large negative score: its `exp` underflows to exactly 0, as with `-inf`, without the NaN
/// of a row of `-inf`.
const MASKED: f32 = -1e9;

fn band(len: usize, window: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..len * len)
        .map(|i| match (i / len).abs_diff(i % len) <= window {
            true => 0.0,
            false => MASKED,
        })
        .collect();
    Tensor::from_vec(values, (len, len), device)
}

/// `layers.N.attn`.
struct Attention {
    wqkv: Dense,
    wo: Dense,
    heads: usize,
    head_size: usize,
    kind: AttentionKind,
}

impl Attention {
    fn forward(&self, x: &Tensor, cx: &Context, mode: &mut Mode) -> Result<Tensor> {
        let train = mode.is_train();
        let (b, len, h) = x.dims3()?;
        let qkv = self
            .wqkv
            .forward(x, train)?
            .reshape((b, len, 3, self.heads, self.head_size))?;
        let part = |i: usize| {
            qkv.narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()
        };
        let (cos, sin) = match self.kind {
            AttentionKind::Global => &cx.global,
            AttentionKind::Local => &cx.local,
        };
        let q = rotate(&part(0)?, cos, sin)?;
        let k = rotate(&part(1)?, cos, sin)?;
        let v = part(2)?;
        let mut scores = q.matmul(&k.t()?)?;
        if self.kind == AttentionKind::Local {
            scores = scores.broadcast_add(&cx.band)?;
        }
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let (p, seed) = mode.draw(true);
        let probs = match mode.kernels() {
            Kernels::Reference => {
                ops::attention_probs_reference(&scores, &cx.mask_bias, scale, p, seed)?
            }
            _ => ops::attention_probs(&scores, &cx.mask_bias, scale, p, seed)?,
        };
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
        mode.attention_dropout(&self.wo.forward(&context, train)?)
    }
}

/// `layers.N.mlp`: `Wo(act(input) * gate)` of `Wi`'s two halves.
struct Mlp {
    wi: Dense,
    wo: Dense,
    intermediate: usize,
    activation: Activation,
}

impl Mlp {
    fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let train = mode.is_train();
        let both = self.wi.forward(x, train)?;
        let input = both.narrow(D::Minus1, 0, self.intermediate)?;
        let gate = both.narrow(D::Minus1, self.intermediate, self.intermediate)?;
        let inner = (activate(&input, self.activation, mode)? * gate)?;
        self.wo.forward(&mode.dropout(&inner)?, train)
    }
}

/// `layers.N`: `x + attn(attn_norm(x))`, then `x + mlp(mlp_norm(x))`.
struct Layer {
    /// None in layer 0, whose input is the embeddings' LayerNorm already.
    attn_norm: Option<Norm>,
    attn: Attention,
    mlp_norm: Norm,
    mlp: Mlp,
}

impl Layer {
    fn new(c: &BertConfig, m: &ModernBertConfig, i: usize, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        let norm = |vb| Norm::new(h, eps, m.norm_bias, vb);
        let inter = c.intermediate_size;
        Ok(Layer {
            attn_norm: match i {
                0 => None,
                _ => Some(norm(vb.pp("attn_norm"))?),
            },
            attn: Attention {
                wqkv: Dense::new(h, 3 * h, m.attention_bias, vb.pp("attn").pp("Wqkv"))?,
                wo: Dense::new(h, h, m.attention_bias, vb.pp("attn").pp("Wo"))?,
                heads: c.num_attention_heads,
                head_size: h / c.num_attention_heads,
                kind: m.layer_types[i],
            },
            mlp_norm: norm(vb.pp("mlp_norm"))?,
            mlp: Mlp {
                wi: Dense::new(h, 2 * inter, m.mlp_bias, vb.pp("mlp").pp("Wi"))?,
                wo: Dense::new(inter, h, m.mlp_bias, vb.pp("mlp").pp("Wo"))?,
                intermediate: inter,
                activation: c.hidden_act,
            },
        })
    }

    fn forward(&self, x: &Tensor, cx: &Context, mode: &mut Mode) -> Result<Tensor> {
        let normed = match &self.attn_norm {
            Some(n) => n.forward(x, mode)?,
            None => x.clone(),
        };
        let x = (x + self.attn.forward(&normed, cx, mode)?)?;
        let normed = self.mlp_norm.forward(&x, mode)?;
        &x + self.mlp.forward(&normed, mode)?
    }
}

/// The ModernBERT encoder: `embeddings.*`, `layers.N.*`, `final_norm`.
pub struct ModernBert {
    tok_embeddings: Tensor,
    embeddings_norm: Norm,
    layers: Vec<Layer>,
    final_norm: Norm,
    global: Rotary,
    local: Rotary,
    /// Tokens each side of a query that local attention sees (`local_attention / 2`).
    window: usize,
    embedding_dropout: bool,
}

impl ModernBert {
    /// Builds the encoder from tensors under `vb` (the `model.` prefix).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let m = own_config(config)?;
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let embeddings = vb.pp("embeddings");
        let head_size = h / config.num_attention_heads;
        Ok(ModernBert {
            tok_embeddings: embeddings.pp("tok_embeddings").get_with_hints(
                (config.vocab_size, h),
                "weight",
                WEIGHT_INIT,
            )?,
            embeddings_norm: Norm::new(h, eps, m.norm_bias, embeddings.pp("norm"))?,
            layers: (0..config.num_hidden_layers)
                .map(|i| Layer::new(config, m, i, vb.pp("layers").pp(i)))
                .collect::<Result<_>>()?,
            final_norm: Norm::new(h, eps, m.norm_bias, vb.pp("final_norm"))?,
            global: Rotary::new(m.global_rope_theta, head_size),
            local: Rotary::new(m.local_rope_theta, head_size),
            window: m.local_attention / 2,
            embedding_dropout: m.embedding_dropout > 0.0,
        })
    }
}

impl ModernBert {
    /// [`Encoder::forward`] of a padded batch as one.
    fn forward_batch(
        &self,
        ids: &Tensor,
        attention_mask: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let device = ids.device();
        let table = param(&self.tok_embeddings, mode.is_train());
        let h = table.dim(1)?;
        let x = table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, len, h))?;
        let mut x = self.embeddings_norm.forward(&x, mode)?;
        if self.embedding_dropout {
            x = mode.dropout(&x)?;
        }
        let mask_bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * (-MASKED as f64))?
            .reshape((b, 1, 1, len))?;
        let cx = Context {
            mask_bias,
            global: self.global.tables(len, device)?,
            local: self.local.tables(len, device)?,
            band: band(len, self.window, device)?,
        };
        for layer in &self.layers {
            x = layer.forward(&x, &cx, mode)?;
        }
        self.final_norm.forward(&x, mode)
    }

    /// [`Encoder::forward`] at inference of a batch whose rows are `lengths` tokens then padding:
    /// each row on its own, its padding's states zeros.
    fn forward_rows(&self, ids: &Tensor, lengths: &[usize], mode: &mut Mode) -> Result<Tensor> {
        let len = ids.dim(1)?;
        let h = self.tok_embeddings.dim(1)?;
        let rows = lengths
            .iter()
            .enumerate()
            .map(|(r, &n)| {
                if n == 0 {
                    return Tensor::zeros((len, h), DType::F32, ids.device());
                }
                let row = ids.narrow(0, r, 1)?.narrow(1, 0, n)?;
                let ones = Tensor::ones((1, n), DType::U32, ids.device())?;
                self.forward_batch(&row, &ones, mode)?
                    .squeeze(0)?
                    .pad_with_zeros(0, 0, len - n)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&rows, 0)
    }
}

impl Encoder for ModernBert {
    fn forward(
        &self,
        ids: &Tensor,
        _type_ids: &Tensor,
        attention_mask: &Tensor,
        _prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        if !mode.is_train() {
            if let Some(lengths) = prefix_lengths(attention_mask)? {
                return self.forward_rows(ids, &lengths, mode);
            }
        }
        self.forward_batch(ids, attention_mask, mode)
    }
}

/// `head`: the dense layer, activation and LayerNorm that ModernBERT's
/// `ModernBertForTokenClassification` applies to the hidden states before its `classifier`.
pub struct PredictionHead {
    dense: Dense,
    activation: Activation,
    norm: Norm,
}

impl PredictionHead {
    /// `head.dense` and `head.norm` under `vb` (`head`).
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        let m = own_config(config)?;
        let h = config.hidden_size;
        Ok(PredictionHead {
            dense: Dense::new(h, h, m.classifier_bias, vb.pp("dense"))?,
            activation: m.classifier_activation,
            norm: Norm::new(h, config.layer_norm_eps, m.norm_bias, vb.pp("norm"))?,
        })
    }

    /// `norm(act(dense(x)))` for `x` `[rows, hidden]`. At inference on CPU row by row
    /// ([`ops::linear_rows`]), as the classifier after it: a word's scores do not depend on what
    /// it is batched with.
    pub fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        let x = match mode.is_train() {
            true => self.dense.forward(x, true)?,
            false => {
                let zeros = || Tensor::zeros(self.dense.weight.dim(0)?, DType::F32, x.device());
                let bias = self.dense.bias.clone().map_or_else(zeros, Ok)?;
                ops::linear_rows(x, &self.dense.weight, &bias)?
            }
        };
        self.norm
            .forward(&activate(&x, self.activation, mode)?, mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_lets_a_query_see_window_tokens_each_side() {
        let b = band(5, 1, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let seen: Vec<Vec<bool>> = b
            .iter()
            .map(|row| row.iter().map(|&v| v == 0.0).collect())
            .collect();
        assert_eq!(seen[0], [true, true, false, false, false]);
        assert_eq!(seen[2], [false, true, true, true, false]);
        assert_eq!(seen[4], [false, false, false, true, true]);
    }

    #[test]
    fn rotation_keeps_position_zero_and_each_pairs_length() {
        let rotary = Rotary::new(10000.0, 4);
        let (cos, sin) = rotary.tables(3, &Device::Cpu).unwrap();
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap()
            .repeat((1, 1, 3, 1))
            .unwrap();
        let y = rotate(&x, &cos, &sin).unwrap().squeeze(0).unwrap();
        let y = y.to_vec3::<f32>().unwrap();
        let rows = &y[0];
        assert_eq!(rows[0], [1.0, 2.0, 3.0, 4.0]);
        for row in rows {
            // Dimensions i and i + 2 rotate together.
            for i in 0..2 {
                let norm = (row[i] * row[i] + row[i + 2] * row[i + 2]).sqrt();
                let was = ((i + 1) * (i + 1) + (i + 3) * (i + 3)) as f32;
                assert!((norm - was.sqrt()).abs() < 1e-5, "{row:?}");
            }
        }
        assert_ne!(rows[1], rows[0]);
    }
}
