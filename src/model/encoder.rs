//! What every encoder family shares: the [`Encoder`] interface the heads, training and inference
//! use, the forward [`Mode`] with its seeded [`Dropout`], and the building blocks (LayerNorm,
//! linear and embedding layers) whose tensors the families name after their checkpoints.
//!
//! Training needs gradients through every op, and candle's fused LayerNorm and last-dim softmax
//! kernels have none (huggingface/candle#3011, #3569): training through them would leave the encoder
//! frozen. So [`Mode::Train`] uses newstag's own fused kernels with backward passes
//! ([`crate::kernels`]: LayerNorm, masked softmax, GELU, dropout; on CPU, falling back to
//! compositions of differentiable candle ops elsewhere), with real dropout. With the exact GELU on
//! CPU in f32 the BERT-shaped layers also write their backward pass out (`layers/backward.rs`):
//! always take gradients with [`Mode::backward`]. [`Mode::Infer`] has no dropout: on CPU it runs
//! the same fused kernels, and with prepared weights ([`Encoder::prepare`]) the per-window
//! attention of [`crate::kernels::self_attention`] and optionally bf16 products
//! ([`crate::kernels::bf16`]); elsewhere candle's forward-only kernels.

use super::config::BertConfig;
use super::layers::{Layers, Prepared, PreparedPath};
use super::Precision;
use crate::kernels as ops;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::sync::{Arc, Mutex};

/// An encoder of any family: token ids in, one hidden state per token out, with optional prepared
/// weights that speed up inference. Families built on BERT's layers get it from [`BertLayered`];
/// others implement it directly.
pub trait Encoder: Send + Sync {
    /// Hidden states `[batch, len, hidden]` for token ids `[batch, len]`; `attention_mask` is 1 on
    /// tokens and 0 on padding. `prepared` (from [`Encoder::prepare`], on the current weights)
    /// speeds up inference on CPU.
    fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor>;

    /// Copies of the current weights for [`Encoder::forward`] at inference, at `precision`: for
    /// the CPU kernels on CPU (the caller checks that the CPU has what [`Precision::Bf16`] needs),
    /// for [`PreparedPath::Device`] elsewhere. By default none: a family without a prepared path
    /// runs its forward pass as it is (and in f32 only, [`super::family::Family::reduced_precision`]).
    fn prepare(&self, _precision: Precision) -> Result<Prepared> {
        Ok(Prepared::none(PreparedPath::Cpu))
    }

    /// [`Encoder::prepare`] for the forward pass `path` whatever the device (tests run the device
    /// path on CPU).
    fn prepare_for(&self, _precision: Precision, path: PreparedPath) -> Result<Prepared> {
        Ok(Prepared::none(path))
    }
}

/// A family made of its own embeddings (named as its checkpoints name them) over BERT's stack of
/// transformer layers, whose forward pass, fused kernels and prepared inference weights are
/// shared ([`Layers`]).
pub trait BertLayered: Send + Sync {
    /// The embedded input `[batch, len, hidden]` for token ids `[batch, len]` (dropout applied in
    /// training).
    fn embed(&self, ids: &Tensor, type_ids: &Tensor, mode: &mut Mode) -> Result<Tensor>;

    /// The transformer layers.
    fn layers(&self) -> &Layers;
}

impl<T: BertLayered> Encoder for T {
    fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        attention_mask: &Tensor,
        prepared: Option<&Prepared>,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let x = self.embed(ids, type_ids, mode)?;
        self.layers().forward(x, attention_mask, prepared, mode)
    }

    fn prepare(&self, precision: Precision) -> Result<Prepared> {
        self.layers().prepare(precision)
    }

    fn prepare_for(&self, precision: Precision, path: PreparedPath) -> Result<Prepared> {
        self.layers().prepare_for(precision, path)
    }
}

/// The attention bias `[batch, 1, 1, len]` of an `attention_mask` `[batch, len]` (1 on tokens, 0
/// on padding): padding gets a large negative bias, so its exp underflows to exactly 0, as with
/// -inf, without the NaN an all -inf row would make.
pub(crate) fn mask_bias(attention_mask: &Tensor) -> Result<Tensor> {
    let (b, len) = attention_mask.dims2()?;
    ((attention_mask.to_dtype(candle_core::DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, len))
}

pub(crate) const WEIGHT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// Forward mode.
pub enum Mode {
    /// No dropout, fused kernels.
    Infer,
    /// Differentiable kernels and dropout masks drawn from this source ([`Mode::train`]). Take
    /// the gradients with [`Mode::backward`], once: on CPU the layers' parameters get theirs from
    /// backward passes newstag writes out ([`ParamGrads`]), which `loss.backward()` alone misses.
    Train(Box<Dropout>, ParamGrads),
}

/// Parameter gradients computed outside candle's backward pass, left here by the ops that
/// compute them during it (shared, so an op can hold it), for [`Mode::backward`] to collect.
#[derive(Clone, Default)]
pub struct ParamGrads(Arc<Mutex<Vec<(Tensor, Tensor)>>>);

impl ParamGrads {
    /// Records `grad` as (a part of) the gradient of `param`.
    pub(crate) fn add(&self, param: &Tensor, grad: Tensor) -> Result<()> {
        self.lock()?.push((param.clone(), grad));
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<(Tensor, Tensor)>>> {
        self.0
            .lock()
            .map_err(|_| candle_core::Error::Msg("a backward pass panicked".into()))
    }

    /// Moves the recorded gradients into `grads`, summed with any it has for the same tensors.
    fn drain_into(&self, grads: &mut GradStore) -> Result<()> {
        for (param, grad) in self.lock()?.drain(..) {
            let sum = match grads.remove(&param) {
                Some(g) => (g + grad)?,
                None => grad,
            };
            grads.insert(&param, sum);
        }
        Ok(())
    }
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
    /// Training with dropout masks from `dropout`.
    pub fn train(dropout: Box<Dropout>) -> Self {
        Mode::Train(dropout, ParamGrads::default())
    }

    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(..))
    }

    /// The gradients of `loss`, computed from a forward pass in this mode: candle's backward
    /// pass, with the parameter gradients the layers computed themselves added in.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = loss.backward()?;
        if let Mode::Train(_, param_grads) = self {
            param_grads.drain_into(&mut grads)?;
        }
        Ok(grads)
    }

    /// Where layers that compute their parameters' gradients leave them (training only).
    pub(crate) fn param_grads(&self) -> Option<&ParamGrads> {
        match self {
            Mode::Train(_, g) => Some(g),
            Mode::Infer => None,
        }
    }

    /// Which kernels a forward pass uses.
    pub(crate) fn kernels(&self) -> Kernels {
        match self {
            Mode::Infer => Kernels::Infer,
            Mode::Train(d, _) if d.reference => Kernels::Reference,
            Mode::Train(..) => Kernels::Fused,
        }
    }

    /// Hidden-state dropout (identity at inference).
    pub fn dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(x.clone()),
            Mode::Train(d, _) => {
                let p = d.hidden;
                d.apply(x, p)
            }
        }
    }

    pub(crate) fn attention_dropout(&mut self, x: &Tensor) -> Result<Tensor> {
        match self {
            Mode::Infer => Ok(x.clone()),
            Mode::Train(d, _) => {
                let p = d.attention;
                d.apply(x, p)
            }
        }
    }

    /// Drop probability and mask seed for a fused kernel's dropout (the draw [`Mode::dropout`]
    /// would make); `(0, 0)` at inference.
    pub(crate) fn draw(&mut self, attention: bool) -> (f32, u64) {
        match self {
            Mode::Infer => (0.0, 0),
            Mode::Train(d, _) => {
                let p = if attention { d.attention } else { d.hidden };
                (p, d.draw(p))
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernels {
    /// candle's forward-only kernels.
    Infer,
    /// newstag's fused kernels with backward passes.
    Fused,
    /// Compositions of differentiable candle ops.
    Reference,
}

/// LayerNorm over the last dimension.
#[derive(Clone)]
pub struct LayerNorm {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    pub(crate) eps: f64,
}

impl LayerNorm {
    pub(crate) fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", Init::Const(0.0))?,
            eps,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, mode: &Mode) -> Result<Tensor> {
        match mode.kernels() {
            Kernels::Infer if x.is_contiguous() => {
                candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32)
            }
            Kernels::Fused => ops::layer_norm(x, &self.weight, &self.bias, self.eps),
            _ => ops::layer_norm_reference(x, &self.weight, &self.bias, self.eps),
        }
    }
}

pub(crate) fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints((output, input), "weight", WEIGHT_INIT)?;
    let bias = vb.get_with_hints(output, "bias", Init::Const(0.0))?;
    Ok(Linear::new(weight, Some(bias)))
}

pub(crate) fn embedding(count: usize, size: usize, vb: VarBuilder) -> Result<Embedding> {
    Ok(Embedding::new(
        vb.get_with_hints((count, size), "weight", WEIGHT_INIT)?,
        size,
    ))
}

/// A parameter as the fused kernels read it: detached at inference, where as a variable it would
/// make every activation keep its inputs alive for a backward pass that never comes.
pub(crate) fn param(t: &Tensor, train: bool) -> Tensor {
    if train {
        t.clone()
    } else {
        t.detach()
    }
}

/// The bias of a linear layer (the encoder's all have one).
pub(crate) fn bias(l: &Linear, train: bool) -> Result<Tensor> {
    l.bias()
        .map(|b| param(b, train))
        .ok_or_else(|| candle_core::Error::Msg("a linear layer without bias".into()))
}
