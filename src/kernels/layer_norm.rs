//! LayerNorm over the last dimension: one pass forward, one backward that also sums the weight
//! and bias gradients (candle's composition is eight ops forward and about twenty backward).

use super::host::{
    check_shapes, map_rows_on, par_rows, rows_and_column_sums, rows_from, rows_per_chunk,
    runs_fused, split_rows_and_sums, Host, HostKernel, Input, Rows, Simd, SimdBody,
};
use super::math::{sum1, sum2, sum3};
use candle_core::{bail, Result, Shape, Tensor, D};

/// LayerNorm over the last dimension, differentiable in `x`, `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    layer_norm_on(x, weight, bias, eps, Simd::best())
}

/// [`layer_norm`] with its forward loops on the given instructions (the same bits on every one).
pub fn layer_norm_on(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    simd: Simd,
) -> Result<Tensor> {
    if runs_fused(x) && runs_fused(weight) && runs_fused(bias) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            Host(LayerNormOp {
                eps: eps as f32,
                simd,
            }),
        )
    } else {
        layer_norm_reference(x, weight, bias, eps)
    }
}

/// LayerNorm from differentiable candle ops (any device).
pub fn layer_norm_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Mean and 1/std of one row (two passes, as the reference computes them).
#[inline(always)]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let inv_d = 1.0 / x.len() as f32;
    let mean = sum1(x, |v| v) * inv_d;
    let var = sum1(x, |v| (v - mean) * (v - mean)) * inv_d;
    (mean, 1.0 / (var + eps).sqrt())
}

/// [`layer_norm`] at inference, in place on the rows of `d` in `y` (`weight` and `bias` of `d`):
/// the same bits, without a buffer of its own.
pub(crate) fn layer_norm_in_place(y: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let d = weight.len();
    par_rows(y, d, rows_per_chunk(d), |_, rows| {
        Simd::best().run(NormInPlace {
            rows,
            weight,
            bias,
            eps,
        })
    });
}

/// [`layer_norm_in_place`]'s rows.
struct NormInPlace<'a> {
    rows: &'a mut [f32],
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f32,
}

impl SimdBody for NormInPlace<'_> {
    type Out = ();

    #[inline(always)]
    fn call(self) {
        for y in self.rows.chunks_exact_mut(self.weight.len()) {
            let (mean, rstd) = row_stats(y, self.eps);
            for ((y, &w), &b) in y.iter_mut().zip(self.weight).zip(self.bias) {
                *y = normed(*y, mean, rstd, w, b);
            }
        }
    }
}

/// One element of a LayerNorm's output.
#[inline(always)]
fn normed(x: f32, mean: f32, rstd: f32, w: f32, b: f32) -> f32 {
    (x - mean) * rstd * w + b
}

struct LayerNormOp {
    eps: f32,
    simd: Simd,
}

/// `(x - mean) / std * weight + bias`, row by row.
struct NormRows<'a> {
    weight: &'a [f32],
    bias: &'a [f32],
    eps: f32,
}

impl Rows<1> for NormRows<'_> {
    #[inline(always)]
    fn row(&self, _: usize, [x]: [&[f32]; 1], y: &mut [f32]) {
        let (mean, rstd) = row_stats(x, self.eps);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(self.weight).zip(self.bias) {
            *y = normed(x, mean, rstd, w, b);
        }
    }
}

impl HostKernel<3> for LayerNormOp {
    const NAME: &'static str = "newstag-layer-norm";

    fn forward(&self, [x, w, b]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let d = x.last_dim()?;
        let (w, b) = (w.data, b.data);
        if w.len() != d || b.len() != d {
            bail!(
                "{}: weight/bias of {}/{} for rows of {d}",
                Self::NAME,
                w.len(),
                b.len()
            )
        }
        let rows = NormRows {
            weight: w,
            bias: b,
            eps: self.eps,
        };
        let y = map_rows_on(self.simd, [x.data], d, &rows);
        Ok((y, x.shape()))
    }

    fn backward(
        &self,
        [x, weight, _bias]: [&Tensor; 3],
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 3]> {
        let [gx, gw, gb] = layer_norm_backward(x, weight, self.eps as f64, grad)?;
        Ok([Some(gx), Some(gw), Some(gb)])
    }
}

/// The gradients of [`layer_norm`]'s `(x, weight, bias)` from its output's gradient `grad`
/// (contiguous `f32` CPU tensors).
pub(crate) fn layer_norm_backward(
    x: &Tensor,
    weight: &Tensor,
    eps: f64,
    grad: &Tensor,
) -> Result<[Tensor; 3]> {
    let d = weight.elem_count();
    let rows = x.elem_count() / d;
    let grads = x.apply_op3_no_bwd(
        weight,
        &grad.contiguous()?,
        &Host(LayerNormBwdOp { eps: eps as f32 }),
    )?;
    let (gx, sums) = split_rows_and_sums(&grads, rows, 2, x.shape())?;
    let gw = sums[0].reshape(weight.shape())?;
    let gb = sums[1].reshape(weight.shape())?;
    Ok([gx, gw, gb])
}

/// LayerNorm backward: `(x, weight, grad_y)` to `[rows + 2, d]`: the rows of grad_x, then
/// grad_weight and grad_bias.
struct LayerNormBwdOp {
    eps: f32,
}

impl HostKernel<3> for LayerNormBwdOp {
    const NAME: &'static str = "newstag-layer-norm-bwd";

    fn forward(&self, [x, w, g]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        let d = x.last_dim()?;
        let (x, w, g) = (x.data, w.data, g.data);
        check_shapes(w.len() == d && g.len() == x.len(), Self::NAME)?;
        let rows = x.len() / d;
        let inv_d = 1.0 / d as f32;
        let out = rows_and_column_sums(rows, d, 2, |first, gx, part| {
            let (x, g) = (rows_from(x, first, d, gx), rows_from(g, first, d, gx));
            let (pw, pb) = part.split_at_mut(d);
            for ((x, g), gx) in x
                .chunks_exact(d)
                .zip(g.chunks_exact(d))
                .zip(gx.chunks_exact_mut(d))
            {
                let (mean, rstd) = row_stats(x, self.eps);
                let a = sum2(g, w, |g, w| g * w) * inv_d;
                let c = sum3(g, w, x, |g, w, x| g * w * ((x - mean) * rstd)) * inv_d;
                let (pw, pb) = (&mut pw[..d], &mut pb[..d]);
                for ((((gx, &x), &g), &w), (pw, pb)) in gx
                    .iter_mut()
                    .zip(x)
                    .zip(g)
                    .zip(w)
                    .zip(pw.iter_mut().zip(pb.iter_mut()))
                {
                    let xhat = (x - mean) * rstd;
                    *gx = rstd * (g * w - a - xhat * c);
                    *pw += g * xhat;
                    *pb += g;
                }
            }
        });
        Ok((out, Shape::from((rows + 2, d))))
    }
}
