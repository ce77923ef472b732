//! The BERT encoder: embeddings, self-attention, feed-forward, post-LayerNorm.
//!
//! Training needs gradients through every op, and candle's fused LayerNorm and last-dim softmax
//! kernels have none (huggingface/candle#3011, #3569): training through them would leave the encoder
//! frozen. So [`Mode::Train`] uses newstag's own fused kernels with backward passes
//! ([`crate::kernels`]: LayerNorm, masked softmax, GELU, dropout; on CPU, falling back to
//! compositions of differentiable candle ops elsewhere), with real dropout. [`Mode::Infer`] has no
//! dropout: on CPU it runs the same fused kernels, and with [`Bert::prepare`]d weights the
//! per-window attention of [`crate::kernels::self_attention`] and optionally bf16 products
//! ([`crate::kernels::bf16`]); elsewhere candle's forward-only kernels.

use super::config::{Activation, BertConfig};
use super::Precision;
use crate::kernels::{self as ops, bf16};
use candle_core::{DType, Module, Result, Tensor, TensorId};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::Arc;

const WEIGHT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// Forward mode.
pub enum Mode {
    /// No dropout, fused kernels.
    Infer,
    /// Differentiable kernels and dropout masks drawn from this source.
    Train(Box<Dropout>),
}

/// Dropout with masks from a seeded generator, so a run is reproducible and resumable.
pub struct Dropout {
    hidden: f32,
    attention: f32,
    rng: StdRng,
    reference: bool,
}

impl Dropout {
    pub fn new(config: &BertConfig, seed: u64) -> Box<Self> {
        Box::new(Dropout {
            hidden: config.hidden_dropout_prob as f32,
            attention: config.attention_probs_dropout_prob as f32,
            rng: StdRng::seed_from_u64(seed),
            reference: false,
        })
    }

    /// Trains through compositions of differentiable candle ops instead of the fused kernels
    /// (same dropout masks), to check and benchmark the fused kernels against.
    pub fn with_reference_kernels(mut self: Box<Self>) -> Box<Self> {
        self.reference = true;
        self
    }

    /// The seed of a fresh mask stream (see [`ops::dropout`]) for drop probability `p`; nothing
    /// is drawn when `p` is 0.
    fn draw(&mut self, p: f32) -> u64 {
        if p > 0.0 {
            self.rng.random::<u64>()
        } else {
            0
        }
    }

    fn apply(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        let seed = self.draw(p);
        if self.reference {
            ops::dropout_reference(x, p, seed)
        } else {
            ops::dropout(x, p, seed)
        }
    }
}

impl Mode {
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }

    /// Which kernels a forward pass uses.
    fn kernels(&self) -> Kernels {
        match self {
            Mode::Infer => Kernels::Infer,
            Mode::Train(d) if d.reference => Kernels::Reference,
            Mode::Train(_) => Kernels::Fused,
        }
    }

    /// Hidden-state dropout (identity at inference).
    pub fn dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(x.clone()),
            Mode::Train(d) => {
                let p = d.hidden;
                d.apply(x, p)
            }
        }
    }

    fn attention_dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(x.clone()),
            Mode::Train(d) => {
                let p = d.attention;
                d.apply(x, p)
            }
        }
    }

    /// Drop probability and mask seed for a fused kernel's dropout (the draw [`Mode::dropout`]
    /// would make); `(0, 0)` at inference.
    fn draw(&mut self, attention: bool) -> (f32, u64) {
        match self {
            Mode::Infer => (0.0, 0),
            Mode::Train(d) => {
                let p = if attention { d.attention } else { d.hidden };
                (p, d.draw(p))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// candle's forward-only kernels.
    Infer,
    /// newstag's fused kernels with backward passes.
    Fused,
    /// Compositions of differentiable candle ops.
    Reference,
}

/// LayerNorm over the last dimension.
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        match mode.kernels() {
            Kernels::Infer if x.is_contiguous() => {
                candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32)
            }
            Kernels::Fused => ops::layer_norm(x, &self.weight, &self.bias, self.eps),
            _ => ops::layer_norm_reference(x, &self.weight, &self.bias, self.eps),
        }
    }
}

fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((output, input), "weight", WEIGHT_INIT)?;
    let bias = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

fn embedding(count: usize, size: usize, vb: VarBuilder) -> Result<Embedding> {
    Ok(Embedding::new(
        vb.get_with_hints((count, size), "weight", WEIGHT_INIT)?,
        size,
    ))
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Embeddings {
            word: embedding(c.vocab_size, c.hidden_size, vb.pp("word_embeddings"))?,
            position: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type: embedding(
                c.type_vocab_size,
                c.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            norm: LayerNorm::new(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        let x = self.norm.forward(&x, mode)?;
        mode.dropout(&x)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    heads: usize,
    head_size: usize,
    activation: Activation,
}

impl Layer {
    fn new(c: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        Ok(Layer {
            query: linear(h, h, att.pp("self").pp("query"))?,
            key: linear(h, h, att.pp("self").pp("key"))?,
            value: linear(h, h, att.pp("self").pp("value"))?,
            attention_out: linear(h, h, att.pp("output").pp("dense"))?,
            attention_norm: LayerNorm::new(h, c.layer_norm_eps, att.pp("output").pp("LayerNorm"))?,
            intermediate: linear(h, c.intermediate_size, vb.pp("intermediate").pp("dense"))?,
            output: linear(c.intermediate_size, h, vb.pp("output").pp("dense"))?,
            output_norm: LayerNorm::new(h, c.layer_norm_eps, vb.pp("output").pp("LayerNorm"))?,
            heads: c.num_attention_heads,
            head_size: h / c.num_attention_heads,
            activation: c.hidden_act,
        })
    }

    /// Training with the fused kernels, and inference on CPU without prepared weights. `x`:
    /// `[batch * len, hidden]` (rows stay 2-D through the encoder: every reshape would be one more
    /// node for backpropagation to pass through); `mask_bias` as for [`Layer::forward`]. The same
    /// computation and dropout masks as [`Layer::forward`] with the reference kernels.
    fn forward_fused(
        &self,
        x: &Tensor,
        batch: usize,
        mask_bias: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let train = mode.is_train();
        let heads = |l: &Linear, transposed: bool| {
            ops::bias_split_heads(
                &x.matmul(&param(l.weight(), train).t()?)?,
                &bias(l, train)?,
                batch,
                self.heads,
                transposed,
            )
        };
        let q = heads(&self.query, false)?;
        // Keys come transposed, `[batch, heads, head_size, len]`, ready for `q k^T`.
        let kt = heads(&self.key, true)?;
        let v = heads(&self.value, false)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let (p, seed) = mode.draw(true);
        let probs = ops::attention_probs(&q.matmul(&kt)?, mask_bias, scale, p, seed)?;
        let context = ops::merge_heads(&probs.matmul(&v)?)?;
        self.forward_after_attention(x, &context, None, mode)
    }

    /// Inference on CPU with prepared weights: queries, keys and values from one product, then
    /// attention per window and head over the window's `lengths` tokens only.
    fn forward_prepared(
        &self,
        x: &Tensor,
        lengths: &[usize],
        prepared: &PreparedLayer,
    ) -> Result<Tensor> {
        let qkv = prepared.qkv.multiply(x)?;
        let context = ops::self_attention(&qkv, &prepared.qkv_bias, lengths, self.heads)?;
        self.forward_after_attention(x, &context, Some(prepared), &mut Mode::Infer)
    }

    /// The rest of [`Layer::forward_fused`] from the attention context `[batch * len, hidden]`:
    /// output projection, residual, LayerNorm, feed-forward, residual, LayerNorm.
    fn forward_after_attention(
        &self,
        x: &Tensor,
        context: &Tensor,
        prepared: Option<&PreparedLayer>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let train = mode.is_train();
        let project = |l: &Linear, x: &Tensor| match prepared.and_then(|p| p.get(l)) {
            Some(w) => w.multiply(x),
            None => x.matmul(&param(l.weight(), train).t()?),
        };
        let norm = |n: &LayerNorm, x: &Tensor| {
            ops::layer_norm(x, &param(&n.weight, train), &param(&n.bias, train), n.eps)
        };
        let (p, seed) = mode.draw(false);
        let attended = ops::bias_dropout_add(
            &project(&self.attention_out, context)?,
            &bias(&self.attention_out, train)?,
            x,
            p,
            seed,
        )?;
        let x = norm(&self.attention_norm, &attended)?;
        let inner = project(&self.intermediate, &x)?;
        let inner_bias = bias(&self.intermediate, train)?;
        let inner = match self.activation {
            Activation::Gelu => ops::bias_gelu(&inner, &inner_bias)?,
            Activation::GeluNew => inner.broadcast_add(&inner_bias)?.gelu()?,
            Activation::Relu => inner.broadcast_add(&inner_bias)?.relu()?,
        };
        let (p, seed) = mode.draw(false);
        let out = ops::bias_dropout_add(
            &project(&self.output, &inner)?,
            &bias(&self.output, train)?,
            &x,
            p,
            seed,
        )?;
        norm(&self.output_norm, &out)
    }

    /// Inference with [`PreparedPath::Device`] weights (a GPU's bf16 path): queries, keys and
    /// values from one product, candle's softmax and LayerNorm in f32. `x`: `[batch, len,
    /// hidden]`; `mask_bias` as for [`Layer::forward`].
    fn forward_device(
        &self,
        x: &Tensor,
        mask_bias: &Tensor,
        prepared: &PreparedLayer,
    ) -> Result<Tensor> {
        let (b, len, h) = x.dims3()?;
        let rows = x.reshape((b * len, h))?;
        let linear = |l: &Linear, x: &Tensor| -> Result<Tensor> {
            let w = prepared
                .get(l)
                .ok_or_else(|| candle_core::Error::Msg("an unprepared linear layer".into()))?;
            w.multiply(x)?.broadcast_add(&bias(l, false)?)
        };
        let qkv = prepared
            .qkv
            .multiply(&rows)?
            .broadcast_add(&prepared.qkv_bias)?;
        let split = |i: usize| {
            qkv.narrow(1, i * h, h)?
                .reshape((b, len, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask_bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * len, h))?;
        let norm = |n: &LayerNorm, x: &Tensor| {
            candle_nn::ops::layer_norm(x, &n.weight, &n.bias, n.eps as f32)
        };
        let x = norm(
            &self.attention_norm,
            &(linear(&self.attention_out, &context)? + &rows)?,
        )?;
        let inner = linear(&self.intermediate, &x)?;
        let inner = match self.activation {
            Activation::Gelu => inner.gelu_erf()?,
            Activation::GeluNew => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        let out = norm(&self.output_norm, &(linear(&self.output, &inner)? + &x)?)?;
        out.reshape((b, len, h))
    }

    /// Inference off the CPU, or training with the reference kernels. `x`: `[batch, len, hidden]`;
    /// `mask_bias`: `[batch, 1, 1, len]`, 0 on tokens and a large negative number on padding.
    fn forward(&self, x: &Tensor, mask_bias: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (b, len, h) = x.dims3()?;
        let split = |t: Tensor| {
            t.reshape((b, len, self.heads, self.head_size))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scores = q.matmul(&k.t()?)?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        let probs = match mode.kernels() {
            Kernels::Infer => {
                candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(mask_bias)?)?
            }
            _ => ops::masked_softmax_reference(&scores, mask_bias, scale)?,
        };
        let probs = mode.attention_dropout(&probs)?;
        let context = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
        let attended = mode.dropout(&self.attention_out.forward(&context)?)?;
        let x = self.attention_norm.forward(&(attended + x)?, mode)?;
        let inner = self.intermediate.forward(&x)?;
        let inner = match self.activation {
            Activation::Gelu => inner.gelu_erf()?,
            Activation::GeluNew => inner.gelu()?,
            Activation::Relu => inner.relu()?,
        };
        let out = mode.dropout(&self.output.forward(&inner)?)?;
        self.output_norm.forward(&(out + x)?, mode)
    }
}

/// A parameter as the fused kernels read it: detached at inference, where as a variable it would
/// make every activation keep its inputs alive for a backward pass that never comes.
fn param(t: &Tensor, train: bool) -> Tensor {
    if train {
        t.clone()
    } else {
        t.detach()
    }
}

/// The bias of a linear layer (the encoder's all have one).
fn bias(l: &Linear, train: bool) -> Result<Tensor> {
    l.bias()
        .map(|b| param(b, train))
        .ok_or_else(|| candle_core::Error::Msg("a linear layer without bias".into()))
}

/// A linear weight as inference multiplies by it.
enum InferenceWeight {
    /// Transposed to `[in, out]` and contiguous: the multiply reads it row by row without packing
    /// it first, which makes small batches several times faster (a 14-row product with the FFN's
    /// weights: 680 to 100 µs).
    F32(Tensor),
    /// Rounded to bf16 and packed for [`bf16::matmul`].
    Bf16(Arc<bf16::PackedWeight>),
    /// A bf16 tensor `[in, out]` on the model's device (a GPU): candle's bf16 matrix product there
    /// (cuBLAS, f32 accumulation), activations rounded to bf16 on the way in and widened to f32
    /// on the way out, so LayerNorm and softmax keep f32 statistics.
    DeviceBf16(Tensor),
}

impl InferenceWeight {
    /// From a weight transposed to `[in, out]`.
    fn new(w_t: Tensor, precision: Precision, path: PreparedPath) -> Result<Self> {
        Ok(match (precision, path) {
            (Precision::F32, _) => InferenceWeight::F32(w_t.contiguous()?),
            (Precision::Bf16, PreparedPath::Cpu) => {
                InferenceWeight::Bf16(Arc::new(bf16::PackedWeight::from_tensor(&w_t)?))
            }
            (Precision::Bf16, PreparedPath::Device) => {
                InferenceWeight::DeviceBf16(w_t.to_dtype(DType::BF16)?.contiguous()?)
            }
        })
    }

    /// `x w`.
    fn multiply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            InferenceWeight::F32(w_t) => x.matmul(w_t),
            InferenceWeight::Bf16(w) => bf16::matmul(x, w),
            InferenceWeight::DeviceBf16(w) => {
                x.to_dtype(DType::BF16)?.matmul(w)?.to_dtype(DType::F32)
            }
        }
    }
}

/// Which forward pass prepared weights are for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PreparedPath {
    /// [`Layer::forward_prepared`]: newstag's CPU kernels and per-window attention.
    Cpu,
    /// [`Layer::forward_device`]: candle's kernels on any device, bf16 products (a GPU's path;
    /// it runs on CPU too, for tests).
    Device,
}

/// A layer's weights for inference on CPU: the query, key and value weights side by side, so one
/// product makes all three, and the other linear weights, each in the form the multiply reads
/// fastest at the chosen precision.
pub struct PreparedLayer {
    /// `[hidden, 3 * hidden]`.
    qkv: InferenceWeight,
    /// `[3 * hidden]`.
    qkv_bias: Tensor,
    weights: Vec<(TensorId, InferenceWeight)>,
}

impl PreparedLayer {
    fn new(layer: &Layer, precision: Precision, path: PreparedPath) -> Result<Self> {
        let attention = [&layer.query, &layer.key, &layer.value];
        let qkv = Tensor::cat(&attention.map(|l| l.weight().detach()), 0)?.t()?;
        let qkv_bias = Tensor::cat(
            &attention
                .into_iter()
                .map(|l| bias(l, false))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let weights = [&layer.attention_out, &layer.intermediate, &layer.output]
            .into_iter()
            .map(|l| {
                let w = InferenceWeight::new(l.weight().detach().t()?, precision, path)?;
                Ok((l.weight().id(), w))
            })
            .collect::<Result<_>>()?;
        Ok(PreparedLayer {
            qkv: InferenceWeight::new(qkv, precision, path)?,
            qkv_bias,
            weights,
        })
    }

    /// The inference form of `l`'s weight.
    fn get(&self, l: &Linear) -> Option<&InferenceWeight> {
        self.weights
            .iter()
            .find(|(id, _)| *id == l.weight().id())
            .map(|(_, w)| w)
    }
}

/// Inference copies of the encoder's weights ([`PreparedLayer`]): a snapshot, so they must be
/// prepared again after the weights change.
pub struct Prepared {
    layers: Vec<PreparedLayer>,
    path: PreparedPath,
}

/// The BERT encoder (no pooler).
pub struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
}

impl Bert {
    /// Builds the encoder from tensors under `vb` (`embeddings.*`, `encoder.layer.N.*`).
    pub fn new(config: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let embeddings = Embeddings::new(config, vb.pp("embeddings"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::new(config, vb.pp("encoder").pp("layer").pp(i)))
            .collect::<Result<_>>()?;
        Ok(Bert { embeddings, layers })
    }

    /// Copies of the current weights for [`Bert::forward`] at inference, at `precision`: for the
    /// CPU kernels on CPU (the caller checks that the CPU has what [`Precision::Bf16`] needs),
    /// for [`PreparedPath::Device`] elsewhere.
    pub fn prepare(&self, precision: Precision) -> Result<Prepared> {
        let on_cpu = self.embeddings.word.embeddings().device().is_cpu();
        let path = if on_cpu {
            PreparedPath::Cpu
        } else {
            PreparedPath::Device
        };
        self.prepare_for(precision, path)
    }

    /// [`Bert::prepare`] for the forward pass `path` whatever the device (tests run the device
    /// path on CPU).
    pub fn prepare_for(&self, precision: Precision, path: PreparedPath) -> Result<Prepared> {
        Ok(Prepared {
            layers: self
                .layers
                .iter()
                .map(|l| PreparedLayer::new(l, precision, path))
                .collect::<Result<_>>()?,
            path,
        })
    }

    /// Hidden states `[batch, len, hidden]` for token ids `[batch, len]`; `attention_mask` is 1 on
    /// tokens and 0 on padding. `prepared` (from [`Bert::prepare`], on the current weights) speeds
    /// up inference on CPU.
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, len) = ids.dims2()?;
        // Padding gets a large negative bias: exp underflows to exactly 0, as with -inf.
        let mask_bias =
            ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, len))?;
        let mut x = self.embeddings.forward(ids, type_ids, mode)?;
        // On CPU, inference runs the fused kernels too (without dropout): one pass per op and
        // no head transposes. Elsewhere it keeps candle's forward-only kernels.
        let fused = match mode.kernels() {
            Kernels::Fused => true,
            Kernels::Infer => ops::runs_fused(&x),
            Kernels::Reference => false,
        };
        if !mode.is_train() {
            x = x.detach();
        }
        if let Some(p) = prepared.filter(|p| p.path == PreparedPath::Device && !mode.is_train()) {
            for (layer, prepared) in self.layers.iter().zip(&p.layers) {
                x = layer.forward_device(&x, &mask_bias, prepared)?;
            }
            return Ok(x);
        }
        if fused {
            let h = x.dim(2)?;
            x = x.reshape((b * len, h))?;
            let prepared = match prepared.filter(|_| !mode.is_train()) {
                Some(p) => prefix_lengths(attention_mask)?.map(|lengths| (p, lengths)),
                None => None,
            };
            for (i, layer) in self.layers.iter().enumerate() {
                x = match &prepared {
                    Some((p, lengths)) => layer.forward_prepared(&x, lengths, &p.layers[i])?,
                    None => layer.forward_fused(&x, b, &mask_bias, mode)?,
                };
            }
            return x.reshape((b, len, h));
        }
        for layer in &self.layers {
            x = layer.forward(&x, &mask_bias, mode)?;
        }
        Ok(x)
    }
}

/// Each row's number of tokens when `attention_mask` (`[batch, len]`) is ones then zeros in every
/// row, as batches of windows are; `None` otherwise.
fn prefix_lengths(attention_mask: &Tensor) -> Result<Option<Vec<usize>>> {
    let rows = attention_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|row| {
            let n = row.iter().take_while(|&&m| m != 0).count();
            row[n..].iter().all(|&m| m == 0).then_some(n)
        })
        .collect())
}
