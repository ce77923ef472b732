//! A layer's training step on CPU with its backward pass written out rather than recorded by
//! candle's autograd.
//!
//! Why: candle's backward pass starts each gradient as a tensor of zeros and adds every
//! contribution into a fresh copy, so each of a layer's twenty-odd activation gradients costs a
//! zero fill and two more passes over memory; that, with its own thread pool waking for each add,
//! was a sixth of a MiniLM training step on two cores. Here the forward pass is
//! [`Layer::forward_fused`]'s own two halves, run on the detached input with detached parameters
//! (the same kernels, order and dropout masks), and what they make is kept. One node
//! ([`LayerStep`]) joins the layer's output to its input; its backward pass makes each gradient
//! once, with the kernels' own backward passes and matrix products. The parameters' gradients go
//! to the step's [`ParamGrads`] ([`Mode::backward`] collects them).

use super::{AfterAttention, Attention, Layer, LayerNorm, Linear};
use crate::kernels::backward as bwd;
use crate::kernels::host::{Host, HostKernel, Input};
use crate::kernels::{self as ops};
use crate::model::config::Activation;
use crate::model::encoder::{bias, Kernels, Mode, ParamGrads};
use candle_core::{Result, Shape, Tensor};
use std::sync::Mutex;

impl Layer {
    /// Whether [`Layer::forward_train`] can run `x` in `mode`: training with the fused kernels,
    /// on CPU in f32, with the activation that has a fused kernel, an input that takes a gradient
    /// and parameters that are variables (their gradients are recorded under them).
    pub(super) fn trains_by_hand(&self, x: &Tensor, mode: &Mode) -> bool {
        mode.param_grads().is_some()
            && mode.kernels() == Kernels::Fused
            && x.track_op()
            && ops::runs_fused(x)
            && self.activation == Activation::Gelu
            && self
                .parameters()
                .iter()
                .all(|p| ops::runs_fused(p) && p.is_variable())
    }

    /// [`Layer::forward_fused`] in training, with the backward pass of this file. `x`:
    /// `[batch * len, hidden]`; `mask_bias`: `[batch, 1, 1, len]`.
    pub(super) fn forward_train(
        &self,
        x: &Tensor,
        batch: usize,
        mask_bias: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let Some(grads) = mode.param_grads().cloned() else {
            candle_core::bail!("a layer's training pass outside training")
        };
        let input = x.detach();
        let attention = self.attention_fused(&input, batch, mask_bias, mode, false)?;
        let (y, after) = self.after_attention(&input, &attention.context, mode, false)?;
        let saved = Saved {
            x: input,
            batch,
            mask_bias: mask_bias.clone(),
            attention,
            after,
        };
        let step = LayerStep {
            layer: self.clone(),
            output: Mutex::new(Some(y)),
            saved: Mutex::new(Some(saved)),
            grads,
        };
        x.apply_op1(Host(step))
    }

    fn parameters(&self) -> Vec<&Tensor> {
        let linears = [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_out,
            &self.intermediate,
            &self.output,
        ];
        let mut p: Vec<&Tensor> = Vec::new();
        for l in linears {
            p.push(l.weight());
            p.extend(l.bias());
        }
        for n in [&self.attention_norm, &self.output_norm] {
            p.extend([&n.weight, &n.bias]);
        }
        p
    }
}

/// What the forward pass keeps for the backward pass (all off candle's graph).
struct Saved {
    /// The layer's input `[batch * len, hidden]` (also the shape of every projection to hidden).
    x: Tensor,
    batch: usize,
    mask_bias: Tensor,
    attention: Attention,
    after: AfterAttention,
}

/// The node joining a layer's output to its input: forward, the output computed off the graph
/// (moved out of `output`); backward, the layer's backward pass from [`Saved`], which it drops
/// once done.
struct LayerStep {
    /// The layer's parameters are the variables themselves: gradients are recorded under them.
    layer: Layer,
    output: Mutex<Option<Tensor>>,
    saved: Mutex<Option<Saved>>,
    grads: ParamGrads,
}

/// The value `slot` holds, taken out of it (each is used once).
fn take<T>(slot: &Mutex<Option<T>>, what: &str) -> Result<T> {
    match slot.lock() {
        Ok(mut s) => s
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("a layer's {what} was used twice"))),
        Err(_) => candle_core::bail!("a layer's {what}: another thread panicked holding it"),
    }
}

impl HostKernel<1> for LayerStep {
    const NAME: &'static str = "newstag-layer";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let y = take(&self.output, "output")?;
        if y.shape() != &x.shape() {
            candle_core::bail!(
                "{}: output {:?} for input {:?}",
                Self::NAME,
                y.dims(),
                x.dims()
            )
        }
        Ok((y.flatten_all()?.to_vec1::<f32>()?, y.shape().clone()))
    }

    fn backward(
        &self,
        _x: [&Tensor; 1],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        let saved = take(&self.saved, "saved activations")?;
        Ok([Some(self.backward_from(saved, grad)?)])
    }
}

impl LayerStep {
    /// The gradient of the layer's input from its output's `grad`, recording the parameters'.
    fn backward_from(&self, s: Saved, grad: &Tensor) -> Result<Tensor> {
        let l = &self.layer;
        // Bias and LayerNorm gradients are views into their kernel's whole output: copied, so
        // that buffer is not held until the optimiser step.
        let record = |p: &Tensor, g: Tensor| {
            let g = if p.rank() == 1 { g.copy()? } else { g };
            self.grads.add(p, g)
        };
        // `x w^T + b` for `x` → `out`: records w's and b's gradients, returns x's.
        let linear = |p: &Linear, x: &Tensor, g_out: &Tensor, g_bias: Tensor| {
            record(p.weight(), g_out.t()?.matmul(x)?)?;
            if let Some(b) = p.bias() {
                record(b, g_bias)?;
            }
            g_out.matmul(&p.weight().detach())
        };
        let bias_of = |p: &Linear| bias(p, false);
        let norm = |n: &LayerNorm, x: &Tensor, g: &Tensor| {
            let [gx, gw, gb] = bwd::layer_norm_backward(x, &n.weight.detach(), n.eps, g)?;
            record(&n.weight, gw)?;
            record(&n.bias, gb)?;
            Ok::<_, candle_core::Error>(gx)
        };

        // Feed-forward block: out = dropout(inner w_o^T + b_o) + x1, inner = gelu(x1 w_i^T + b_i).
        let g_out = norm(&l.output_norm, &s.after.out, grad)?;
        let (p, seed) = s.after.output_dropout;
        let (g_o, g_bo) =
            bwd::bias_dropout_add_backward(&s.x, &bias_of(&l.output)?, p, seed, &g_out)?;
        let g_inner = linear(&l.output, &s.after.inner, &g_o, g_bo)?;
        let (g_i, g_bi) =
            bwd::bias_gelu_backward(&s.after.inner_in, &bias_of(&l.intermediate)?, &g_inner)?;
        let g_x1 = (linear(&l.intermediate, &s.after.x1, &g_i, g_bi)? + g_out)?;

        // Attention block: attended = dropout(context w_a^T + b_a) + x.
        let g_attended = norm(&l.attention_norm, &s.after.attended, &g_x1)?;
        let (p, seed) = s.after.attention_out_dropout;
        let ao_bias = bias_of(&l.attention_out)?;
        let (g_a, g_ba) = bwd::bias_dropout_add_backward(&s.x, &ao_bias, p, seed, &g_attended)?;
        let g_context = linear(&l.attention_out, &s.attention.context, &g_a, g_ba)?;
        let g_heads = bwd::merge_heads_backward(&g_context, s.batch, l.heads)?;
        let g_probs = g_heads.matmul(&s.attention.v.t()?)?;
        let g_v = s.attention.probs.t()?.matmul(&g_heads)?;
        let (p, seed) = s.attention.dropout;
        let g_scores = bwd::attention_probs_backward(
            &s.attention.scores,
            &s.mask_bias,
            s.attention.scale,
            p,
            seed,
            &s.attention.probs,
            &g_probs,
        )?;
        let g_q = g_scores.matmul(&s.attention.kt.t()?)?;
        let g_kt = s.attention.q.t()?.matmul(&g_scores)?;
        let mut g_x = g_attended;
        for (p, g, transposed) in [
            (&l.query, g_q, false),
            (&l.key, g_kt, true),
            (&l.value, g_v, false),
        ] {
            let (g_h, g_b) = bwd::bias_split_heads_backward(
                &s.x,
                &bias_of(p)?,
                s.batch,
                l.heads,
                transposed,
                &g,
            )?;
            g_x = (g_x + linear(p, &s.x, &g_h, g_b)?)?;
        }
        Ok(g_x)
    }
}
