//! Softmax over the last dimension, with its backward pass in one op (candle's backward of its
//! softmax composes several broadcast ops). The row functions serve the attention kernels too.

use super::host::{check_shapes, map_rows, runs_fused, Host, HostKernel, Input};
use super::math::{exp_f32, max8, sum1, sum2};
use candle_core::{Result, Shape, Tensor, D};

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if runs_fused(x) {
        x.contiguous()?.apply_op1(Host(SoftmaxOp))
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Softmax from differentiable candle ops (any device).
pub fn softmax_reference(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// One softmax row: `y = exp(x - max) / sum`, `x` already scaled and masked in `y`.
#[inline(always)]
pub(crate) fn softmax_row_in_place(y: &mut [f32]) {
    let max = max8(y);
    for v in y.iter_mut() {
        *v = exp_f32(*v - max);
    }
    let sum = sum1(y, |v| v);
    for v in y.iter_mut() {
        *v /= sum;
    }
}

/// One row of the softmax backward pass: `gx = scale * y * (g - sum(g * y))`.
#[inline(always)]
fn softmax_row_bwd(y: &[f32], g: &[f32], scale: f32, gx: &mut [f32]) {
    let s = sum2(g, y, |g, y| g * y);
    for ((gx, &y), &g) in gx.iter_mut().zip(y).zip(g) {
        *gx = scale * (y * (g - s));
    }
}

/// Softmax backward: `grad_x = scale * y * (g - sum(g * y))` per row.
pub(super) fn softmax_bwd(y: &Tensor, grad: &Tensor, scale: f32) -> Result<Tensor> {
    y.apply_op2_no_bwd(&grad.contiguous()?, &Host(SoftmaxBwdOp { scale }))
}

struct SoftmaxOp;

impl HostKernel<1> for SoftmaxOp {
    const NAME: &'static str = "newstag-softmax";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let y = map_rows([x.data], x.last_dim()?, |_, [x], y| {
            y.copy_from_slice(x);
            softmax_row_in_place(y);
        });
        Ok((y, x.shape()))
    }

    fn backward(&self, _x: [&Tensor; 1], y: &Tensor, grad: &Tensor) -> Result<[Option<Tensor>; 1]> {
        Ok([Some(softmax_bwd(y, grad, 1.0)?)])
    }
}

struct SoftmaxBwdOp {
    scale: f32,
}

impl HostKernel<2> for SoftmaxBwdOp {
    const NAME: &'static str = "newstag-softmax-bwd";

    fn forward(&self, [y, g]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let d = y.last_dim()?;
        check_shapes(y.data.len() == g.data.len(), Self::NAME)?;
        let gx = map_rows([y.data, g.data], d, |_, [y, g], gx| {
            softmax_row_bwd(y, g, self.scale, gx)
        });
        Ok((gx, y.shape()))
    }
}
