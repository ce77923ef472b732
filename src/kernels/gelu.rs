//! Exact (erf) GELU with its backward pass, each one elementwise pass in `f32` (candle computes
//! `erf` one value at a time, and its backward pass composes several ops).

use super::host::{
    check_shapes, par_rows, rows_from, runs_fused, Host, HostKernel, Input, ELEMWISE_CHUNK,
};
use super::math::{exp_f32, gelu, normal_cdf, INV_SQRT_2PI};
use candle_core::{Result, Shape, Tensor};

/// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`, differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if runs_fused(x) {
        x.contiguous()?.apply_op1(Host(GeluErfOp))
    } else {
        x.gelu_erf()
    }
}

struct GeluErfOp;

impl HostKernel<1> for GeluErfOp {
    const NAME: &'static str = "newstag-gelu-erf";

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        let mut y = vec![0f32; x.data.len()];
        par_rows(&mut y, 1, ELEMWISE_CHUNK, |start, y| {
            let x = rows_from(x.data, start, 1, y);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = gelu(x);
            }
        });
        Ok((y, x.shape()))
    }

    fn backward(
        &self,
        [x]: [&Tensor; 1],
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; 1]> {
        Ok([Some(x.apply_op2_no_bwd(
            &grad.contiguous()?,
            &Host(GeluErfBwdOp),
        )?)])
    }
}

/// GELU backward: `g * ((1 + erf(x / sqrt 2)) / 2 + x * exp(-x^2 / 2) / sqrt(2 pi))`.
struct GeluErfBwdOp;

impl HostKernel<2> for GeluErfBwdOp {
    const NAME: &'static str = "newstag-gelu-erf-bwd";

    fn forward(&self, [x, g]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        let (xs, g) = (x.data, g.data);
        check_shapes(xs.len() == g.len(), Self::NAME)?;
        let mut gx = vec![0f32; xs.len()];
        par_rows(&mut gx, 1, ELEMWISE_CHUNK, |start, gx| {
            let (x, g) = (rows_from(xs, start, 1, gx), rows_from(g, start, 1, gx));
            for ((gx, &x), &g) in gx.iter_mut().zip(x).zip(g) {
                let pdf = exp_f32(-0.5 * x * x) * INV_SQRT_2PI;
                *gx = g * (normal_cdf(x) + x * pdf);
            }
        });
        Ok((gx, x.shape()))
    }
}
