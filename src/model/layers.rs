//! The transformer layers the BERT-shaped families share (BERT, ELECTRA, RoBERTa, XLM-RoBERTa,
//! DistilBERT): self-attention and feed-forward, each followed by a residual and a LayerNorm. A
//! family names the layer's tensors ([`LayerNames`]); the forward passes (newstag's fused
//! kernels with backward passes, the prepared CPU inference path, the GPU's bf16 path and the
//! reference compositions) are the same for all of them.

use super::config::{Activation, BertConfig};
use super::encoder::{bias, linear, param, Kernels, LayerNorm, Mode};
use super::Precision;
use crate::kernels::{self as ops, bf16, fp32, int8, After};
use candle_core::{DType, Device, Module, Result, Tensor, TensorId};
use candle_nn::{Linear, VarBuilder};
use std::sync::Arc;

mod backward;

/// Where one layer's tensors lie under its prefix, as the family's checkpoints name them.
pub struct LayerNames {
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attention_out: &'static str,
    pub attention_norm: &'static str,
    pub intermediate: &'static str,
    pub output: &'static str,
    pub output_norm: &'static str,
    /// Whether the attention output projection is followed by hidden dropout (BERT's
    /// `BertSelfOutput`; DistilBERT has none there).
    pub attention_output_dropout: bool,
}

#[derive(Clone)]
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
    attention_output_dropout: bool,
}

/// The activations of a layer's self-attention ([`Layer::attention_fused`]).
struct Attention {
    q: Tensor,
    /// Keys transposed, `[batch, heads, head_size, len]`.
    kt: Tensor,
    v: Tensor,
    scale: f64,
    scores: Tensor,
    /// After dropout.
    probs: Tensor,
    /// Drop probability and mask seed of the attention dropout.
    dropout: (f32, u64),
    /// Merged back into rows, `[batch * len, hidden]`.
    context: Tensor,
}

/// The activations of the rest of a layer before its output ([`Layer::after_attention`]).
struct AfterAttention {
    /// Before the attention LayerNorm, and after it.
    attended: Tensor,
    x1: Tensor,
    /// The intermediate projection before its bias and activation, and after.
    inner_in: Tensor,
    inner: Tensor,
    /// Before the output LayerNorm.
    out: Tensor,
    /// Drop probabilities and mask seeds of the two dropouts.
    attention_out_dropout: (f32, u64),
    output_dropout: (f32, u64),
}

impl Layer {
    fn new(c: &BertConfig, n: &LayerNames, vb: VarBuilder) -> Result<Self> {
        let h = c.hidden_size;
        let eps = c.layer_norm_eps;
        Ok(Layer {
            query: linear(h, h, vb.pp(n.query))?,
            key: linear(h, h, vb.pp(n.key))?,
            value: linear(h, h, vb.pp(n.value))?,
            attention_out: linear(h, h, vb.pp(n.attention_out))?,
            attention_norm: LayerNorm::new(h, eps, vb.pp(n.attention_norm))?,
            intermediate: linear(h, c.intermediate_size, vb.pp(n.intermediate))?,
            output: linear(c.intermediate_size, h, vb.pp(n.output))?,
            output_norm: LayerNorm::new(h, eps, vb.pp(n.output_norm))?,
            heads: c.num_attention_heads,
            head_size: h / c.num_attention_heads,
            activation: c.hidden_act,
            attention_output_dropout: n.attention_output_dropout,
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
        let track = mode.is_train();
        let attention = self.attention_fused(x, batch, mask_bias, mode, track)?;
        Ok(self.after_attention(x, &attention.context, mode, track)?.0)
    }

    /// Self-attention of [`Layer::forward_fused`], with the activations it makes. `track`: the
    /// parameters take gradients through candle's graph (otherwise they are read detached).
    fn attention_fused(
        &self,
        x: &Tensor,
        batch: usize,
        mask_bias: &Tensor,
        mode: &mut Mode,
        track: bool,
    ) -> Result<Attention> {
        let heads = |l: &Linear, transposed: bool| {
            ops::bias_split_heads(
                &x.matmul(&param(l.weight(), track).t()?)?,
                &bias(l, track)?,
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
        let dropout = mode.draw(true);
        let scores = q.matmul(&kt)?;
        let probs = ops::attention_probs(&scores, mask_bias, scale, dropout.0, dropout.1)?;
        let context = ops::merge_heads(&probs.matmul(&v)?)?;
        Ok(Attention {
            q,
            kt,
            v,
            scale,
            scores,
            probs,
            dropout,
            context,
        })
    }

    /// Inference on CPU with prepared weights, on the windows' tokens packed without padding
    /// (`x`: `[tokens, hidden]`, window after window, `lengths` tokens each): queries, keys and
    /// values from one product, then attention per window and head; each later product does the
    /// step after it (GELU, or bias, residual and LayerNorm) on its own result ([`After`]).
    fn forward_prepared(
        &self,
        x: &Tensor,
        lengths: &[usize],
        prepared: &PreparedLayer,
    ) -> Result<Tensor> {
        let qkv = prepared.qkv.multiply(x)?;
        let context = ops::self_attention(&qkv, &prepared.qkv_bias, lengths, self.heads)?;
        let linear = |l: &Linear, x: &Tensor, after: After<'_>| match prepared.get(l) {
            Some(w) => w.multiply_then(x, after),
            None => candle_core::bail!("an unprepared linear layer"),
        };
        // Dropout is the identity here, so each sub-layer ends in `norm((h + bias) + residual)`.
        let end = |l: &Linear, x: &Tensor, residual: &Tensor, n: &LayerNorm| -> Result<Tensor> {
            // Detached, as every parameter at inference: a variable would make the fallback's
            // ops keep their inputs alive.
            let (bias, weight, norm_bias) = (
                bias(l, false)?,
                param(&n.weight, false),
                param(&n.bias, false),
            );
            let norm = ops::Norm {
                weight: &weight,
                bias: &norm_bias,
                eps: n.eps,
            };
            linear(
                l,
                x,
                After::BiasAddNorm {
                    bias: &bias,
                    residual,
                    norm,
                },
            )
        };
        let x1 = end(&self.attention_out, &context, x, &self.attention_norm)?;
        let inner_bias = bias(&self.intermediate, false)?;
        let inner = match self.activation {
            Activation::Gelu => linear(&self.intermediate, &x1, After::BiasGelu(&inner_bias))?,
            Activation::GeluNew => linear(&self.intermediate, &x1, After::Nothing)?
                .broadcast_add(&inner_bias)?
                .gelu()?,
            Activation::Relu => linear(&self.intermediate, &x1, After::Nothing)?
                .broadcast_add(&inner_bias)?
                .relu()?,
        };
        end(&self.output, &inner, &x1, &self.output_norm)
    }

    /// The rest of [`Layer::forward_fused`] from the attention context `[batch * len, hidden]`:
    /// output projection, residual, LayerNorm, feed-forward, residual, LayerNorm. The layer's
    /// output, with the activations before it (`track` as for [`Layer::attention_fused`]).
    fn after_attention(
        &self,
        x: &Tensor,
        context: &Tensor,
        mode: &mut Mode,
        track: bool,
    ) -> Result<(Tensor, AfterAttention)> {
        let project = |l: &Linear, x: &Tensor| x.matmul(&param(l.weight(), track).t()?);
        let norm = |n: &LayerNorm, x: &Tensor| {
            ops::layer_norm(x, &param(&n.weight, track), &param(&n.bias, track), n.eps)
        };
        let attention_out_dropout = if self.attention_output_dropout {
            mode.draw(false)
        } else {
            (0.0, 0)
        };
        let (p, seed) = attention_out_dropout;
        let attended = ops::bias_dropout_add(
            &project(&self.attention_out, context)?,
            &bias(&self.attention_out, track)?,
            x,
            p,
            seed,
        )?;
        let x1 = norm(&self.attention_norm, &attended)?;
        let inner_in = project(&self.intermediate, &x1)?;
        let inner_bias = bias(&self.intermediate, track)?;
        let inner = match self.activation {
            Activation::Gelu => ops::bias_gelu(&inner_in, &inner_bias)?,
            Activation::GeluNew => inner_in.broadcast_add(&inner_bias)?.gelu()?,
            Activation::Relu => inner_in.broadcast_add(&inner_bias)?.relu()?,
        };
        let output_dropout = mode.draw(false);
        let (p, seed) = output_dropout;
        let out = ops::bias_dropout_add(
            &project(&self.output, &inner)?,
            &bias(&self.output, track)?,
            &x1,
            p,
            seed,
        )?;
        let y = norm(&self.output_norm, &out)?;
        let made = AfterAttention {
            attended,
            x1,
            inner_in,
            inner,
            out,
            attention_out_dropout,
            output_dropout,
        };
        Ok((y, made))
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
        let mut attended = self.attention_out.forward(&context)?;
        if self.attention_output_dropout {
            attended = mode.dropout(&attended)?;
        }
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

/// A linear weight as inference multiplies by it.
enum InferenceWeight {
    /// Transposed to `[in, out]` and contiguous, for candle's product (on a GPU, and on CPUs
    /// without AVX2): it reads the weight row by row without packing it first, which makes
    /// small batches several times faster (a 14-row product with the FFN's weights: 680 to
    /// 100 µs).
    F32(Tensor),
    /// Packed for [`fp32::matmul`] on CPUs with AVX-512 or AVX2, with the kernel that runs it.
    Fp32Packed(Arc<fp32::PackedWeight>, fp32::Fp32Kernel),
    /// Rounded to bf16 and packed for [`bf16::matmul`].
    Bf16(Arc<bf16::PackedWeight>),
    /// Quantised to int8 per output column and packed for [`int8::matmul`]: every product of
    /// every layer (keeping any one kind of product, or the first or last layer, in f32 changed
    /// CoNLL-2003 test F1 by under 0.1 points; all in int8 it is 0.05 below f32). The heads stay
    /// f32 ([`ops::linear_rows`]).
    Int8(Arc<int8::PackedWeight>),
    /// A bf16 tensor `[in, out]` on the model's device (a GPU): candle's bf16 matrix product there
    /// (cuBLAS, f32 accumulation), activations rounded to bf16 on the way in and widened to f32
    /// on the way out, so LayerNorm and softmax keep f32 statistics.
    DeviceBf16(Tensor),
}

impl InferenceWeight {
    /// From a weight transposed to `[in, out]`.
    fn new(w_t: Tensor, precision: Precision, path: PreparedPath) -> Result<Self> {
        Ok(match (precision, path) {
            (Precision::F32, PreparedPath::Cpu) if w_t.device().is_cpu() => {
                match fp32::Fp32Kernel::for_inference() {
                    Some(kernel) => InferenceWeight::Fp32Packed(
                        Arc::new(fp32::PackedWeight::from_tensor(&w_t)?),
                        kernel,
                    ),
                    None => InferenceWeight::F32(w_t.contiguous()?),
                }
            }
            (Precision::F32, _) => InferenceWeight::F32(w_t.contiguous()?),
            (Precision::Bf16, PreparedPath::Cpu) => {
                InferenceWeight::Bf16(Arc::new(bf16::PackedWeight::from_tensor(&w_t)?))
            }
            (Precision::Bf16, PreparedPath::Device) => {
                InferenceWeight::DeviceBf16(w_t.to_dtype(DType::BF16)?.contiguous()?)
            }
            (Precision::Int8, PreparedPath::Cpu) => {
                InferenceWeight::Int8(Arc::new(int8::PackedWeight::from_tensor(&w_t)?))
            }
            (Precision::Int8, PreparedPath::Device) => candle_core::bail!(
                "int8 inference runs on the CPU only (the model is on {:?})",
                w_t.device()
            ),
        })
    }

    /// `x w`, then `after`: in the product's store where its kernel has one (f32 packed, int8),
    /// else as ops of their own.
    fn multiply_then(&self, x: &Tensor, after: After<'_>) -> Result<Tensor> {
        match self {
            InferenceWeight::Fp32Packed(w, kernel) => fp32::matmul(x, w, *kernel, after),
            InferenceWeight::Int8(w) => int8::matmul_with(x, w, int8::Int8Kernel::best(), after),
            _ => {
                let h = self.multiply(x)?;
                match after {
                    After::Nothing => Ok(h),
                    After::BiasGelu(bias) => ops::bias_gelu(&h, bias),
                    After::BiasAdd { bias, residual } => {
                        ops::bias_dropout_add(&h, bias, residual, 0.0, 0)
                    }
                    After::BiasAddNorm {
                        bias,
                        residual,
                        norm,
                    } => ops::layer_norm(
                        &ops::bias_dropout_add(&h, bias, residual, 0.0, 0)?,
                        norm.weight,
                        norm.bias,
                        norm.eps,
                    ),
                }
            }
        }
    }

    /// `x w`.
    fn multiply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            InferenceWeight::F32(w_t) => x.matmul(w_t),
            InferenceWeight::Fp32Packed(w, kernel) => fp32::matmul(x, w, *kernel, After::Nothing),
            InferenceWeight::Bf16(w) => bf16::matmul(x, w),
            InferenceWeight::Int8(w) => int8::matmul(x, w),
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

impl Prepared {
    /// No prepared weights, for a family without a prepared inference path (DeBERTa-v2's,
    /// ModernBERT's), whose forward pass ignores them: callers prepare whatever the family.
    pub fn none(path: PreparedPath) -> Self {
        Prepared {
            layers: Vec::new(),
            path,
        }
    }
}

/// The stack of transformer layers of an encoder.
pub struct Layers {
    layers: Vec<Layer>,
    device: Device,
}

impl Layers {
    /// `config.num_hidden_layers` layers, layer `i` under `vb.pp(i)`, named by `names`.
    pub fn new(config: &BertConfig, names: &LayerNames, vb: VarBuilder) -> Result<Self> {
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::new(config, names, vb.pp(i)))
            .collect::<Result<_>>()?;
        Ok(Layers {
            layers,
            device: vb.device().clone(),
        })
    }

    /// Prepared weights for the CPU kernels on CPU, for [`PreparedPath::Device`] elsewhere.
    pub fn prepare(&self, precision: Precision) -> Result<Prepared> {
        let path = if self.device.is_cpu() {
            PreparedPath::Cpu
        } else {
            PreparedPath::Device
        };
        self.prepare_for(precision, path)
    }

    /// Prepared weights for the forward pass `path`, whatever the device.
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

    /// Hidden states `[batch, len, hidden]` from the embedded input `x` (same shape);
    /// `attention_mask` is 1 on tokens and 0 on padding.
    pub fn forward(
        &self,
        mut x: Tensor,
        attention_mask: &Tensor,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, len, _) = x.dims3()?;
        let mask_bias = super::encoder::mask_bias(attention_mask)?;
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
            if let Some((p, lengths)) = prepared {
                // The windows' tokens without their padding, so that no product computes it.
                let packing = TokenPacking::new(&lengths, len)?;
                let mut tokens = packing.pack(&x)?;
                for (layer, prepared) in self.layers.iter().zip(&p.layers) {
                    tokens = layer.forward_prepared(&tokens, &lengths, prepared)?;
                }
                return packing.unpack(&tokens)?.reshape((b, len, h));
            }
            for layer in &self.layers {
                x = if layer.trains_by_hand(&x, mode) {
                    layer.forward_train(&x, b, &mask_bias, mode)?
                } else {
                    layer.forward_fused(&x, b, &mask_bias, mode)?
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

/// Where the tokens of a batch of windows (`[windows * len, hidden]`, padded) lie once packed one
/// window after another.
struct TokenPacking {
    /// The padded rows that hold tokens, in order, and for each padded row its packed row (or,
    /// for padding, the zero row after them); `None` when no row is padding.
    index: Option<(Tensor, Tensor)>,
}

impl TokenPacking {
    fn new(lengths: &[usize], len: usize) -> Result<Self> {
        let total: usize = lengths.iter().sum();
        if total == lengths.len() * len {
            return Ok(TokenPacking { index: None });
        }
        let mut tokens = Vec::with_capacity(total);
        let mut padded = Vec::with_capacity(lengths.len() * len);
        for (w, &n) in lengths.iter().enumerate() {
            for t in 0..len {
                if t < n {
                    padded.push(tokens.len() as u32);
                    tokens.push((w * len + t) as u32);
                } else {
                    padded.push(total as u32);
                }
            }
        }
        let index = |v: Vec<u32>| {
            let n = v.len();
            Tensor::from_vec(v, n, &Device::Cpu)
        };
        Ok(TokenPacking {
            index: Some((index(tokens)?, index(padded)?)),
        })
    }

    /// The token rows of `x`, packed.
    fn pack(&self, x: &Tensor) -> Result<Tensor> {
        match &self.index {
            Some((tokens, _)) => x.index_select(tokens, 0),
            None => Ok(x.clone()),
        }
    }

    /// Packed rows back in their padded places, with zeros for padding.
    fn unpack(&self, x: &Tensor) -> Result<Tensor> {
        let Some((_, padded)) = &self.index else {
            return Ok(x.clone());
        };
        let zero = Tensor::zeros((1, x.dim(1)?), x.dtype(), x.device())?;
        Tensor::cat(&[x, &zero], 0)?.index_select(padded, 0)
    }
}

/// Each row's number of tokens when `attention_mask` (`[batch, len]`) is ones then zeros in every
/// row, as batches of windows are; `None` otherwise.
pub(crate) fn prefix_lengths(attention_mask: &Tensor) -> Result<Option<Vec<usize>>> {
    let rows = attention_mask.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    Ok(rows
        .iter()
        .map(|row| {
            let n = row.iter().take_while(|&&m| m != 0).count();
            row[n..].iter().all(|&m| m == 0).then_some(n)
        })
        .collect())
}
