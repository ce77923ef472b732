//! The sub-layer's next elementwise step after a packed matrix product at inference, done by each
//! of the product's parallel tasks on the part of the result it has just made: in place, in
//! cache, with no buffer of its own and no second fork and join. As passes of their own (each
//! with a zeroed output), `gelu(h + bias)` after the feed-forward product and `(h + bias) +
//! residual` after the other two took 4% and 2% of f32 `tag`'s time (perf on a Xeon with AMX,
//! model 167). Applied block by block in the kernels' stores instead, they made int8 `tag` slower
//! (the step reloads each block right after its masked stores, which do not forward to loads).
//!
//! The LayerNorm after a residual needs whole rows, which a task has only when the rows are split
//! among the tasks, so it runs once the product is whole, in place on its buffer (its own
//! zeroed output cost 0.75% of f32 `tag`).
//!
//! Each step is the same scalar expression as the pass it replaces ([`super::bias_gelu`],
//! [`super::bias_dropout_add`] without dropout, [`super::layer_norm`]), so the result has the same
//! bits either way.

use super::host::{
    par_blocks_then, product_shape, DisjointOut, Host, HostKernel, Input, Simd, SimdBody,
};
use super::layer_norm::layer_norm_in_place;
use super::math::gelu;
use candle_core::{bail, Result, Shape, Tensor};
use std::ops::Range;

/// What follows a product `h = x w` in the sub-layer, done by the product's tasks.
#[derive(Clone, Copy)]
pub enum After<'a> {
    /// `h` itself.
    Nothing,
    /// `gelu_erf(h + bias)`: the feed-forward layer's activation.
    BiasGelu(&'a Tensor),
    /// `(h + bias) + residual`: a sub-layer's end at inference, where dropout is the identity.
    BiasAdd {
        bias: &'a Tensor,
        residual: &'a Tensor,
    },
    /// [`After::BiasAdd`], then a LayerNorm of its rows in place (the sub-layer's norm).
    BiasAddNorm {
        bias: &'a Tensor,
        residual: &'a Tensor,
        norm: Norm<'a>,
    },
}

/// A LayerNorm's parameters, as [`super::layer_norm`] takes them.
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub eps: f64,
}

/// A packed product whose tasks run an [`Epilogue`] on the part of the result each makes.
pub(crate) trait Product: Send + Sync {
    /// The op's name, in its errors.
    const NAME: &'static str;

    /// The inner and outer dimensions, `(k, n)`.
    fn dims(&self) -> (usize, usize);

    /// `x w` (`rows` of `x`), with `then` applied to every part once it is made.
    fn forward(&self, x: Input<'_>, rows: usize, then: Epilogue<'_>) -> Result<Vec<f32>>;
}

/// `product` of `x`, then `after`.
pub(crate) fn run<P: Product>(x: &Tensor, product: P, after: After<'_>) -> Result<Tensor> {
    let x = x.contiguous()?;
    let norm = match after {
        After::BiasAddNorm { norm, .. } => Some(NormParams {
            weight: norm.weight.flatten_all()?.to_vec1()?,
            bias: norm.bias.flatten_all()?.to_vec1()?,
            eps: norm.eps as f32,
        }),
        _ => None,
    };
    let op = Host(Fused { product, norm });
    match after {
        After::Nothing => x.apply_op1_no_bwd(&op),
        After::BiasGelu(bias) => x.apply_op2_no_bwd(&bias.contiguous()?, &op),
        After::BiasAdd { bias, residual } | After::BiasAddNorm { bias, residual, .. } => {
            x.apply_op3_no_bwd(&bias.contiguous()?, &residual.contiguous()?, &op)
        }
    }
}

/// [`Norm`] read out for the host kernel.
struct NormParams {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// A [`Product`] as a host kernel of one to three inputs, as [`run`] passes them: `x` alone
/// ([`After::Nothing`]), `x` and the bias ([`After::BiasGelu`]), or `x`, the bias and the residual
/// ([`After::BiasAdd`]).
struct Fused<P> {
    product: P,
    /// The LayerNorm after the residual, done in place once the product is whole.
    norm: Option<NormParams>,
}

impl<P: Product> Fused<P> {
    fn forward(
        &self,
        x: Input<'_>,
        bias: Option<Input<'_>>,
        residual: Option<Input<'_>>,
    ) -> Result<(Vec<f32>, Shape)> {
        let (k, n) = self.product.dims();
        let (rows, shape) = product_shape(P::NAME, &x, k, n)?;
        if let Some(b) = bias.filter(|b| b.dims() != [n]) {
            bail!(
                "{}: a bias of shape {:?} for {n} columns",
                P::NAME,
                b.dims()
            )
        }
        if let Some(r) = residual.filter(|r| r.dims() != shape.dims()) {
            bail!(
                "{}: a residual of shape {:?} for {shape:?}",
                P::NAME,
                r.dims()
            )
        }
        let (bias, residual) = (bias.map(|b| b.data), residual.map(|r| r.data));
        let then = match (bias, residual) {
            (None, _) => Epilogue::Nothing,
            (Some(bias), None) => Epilogue::BiasGelu { bias },
            (Some(bias), Some(residual)) => Epilogue::BiasAdd { bias, residual },
        };
        if self
            .norm
            .as_ref()
            .is_some_and(|m| m.weight.len() != n || m.bias.len() != n)
        {
            bail!(
                "{}: LayerNorm parameters for other than {n} columns",
                P::NAME
            )
        }
        let mut y = self.product.forward(x, rows, then)?;
        if let Some(m) = &self.norm {
            layer_norm_in_place(&mut y, &m.weight, &m.bias, m.eps);
        }
        Ok((y, shape))
    }
}

impl<P: Product> HostKernel<1> for Fused<P> {
    const NAME: &'static str = P::NAME;

    fn forward(&self, [x]: [Input<'_>; 1]) -> Result<(Vec<f32>, Shape)> {
        Fused::forward(self, x, None, None)
    }
}

impl<P: Product> HostKernel<2> for Fused<P> {
    const NAME: &'static str = P::NAME;

    fn forward(&self, [x, bias]: [Input<'_>; 2]) -> Result<(Vec<f32>, Shape)> {
        Fused::forward(self, x, Some(bias), None)
    }
}

impl<P: Product> HostKernel<3> for Fused<P> {
    const NAME: &'static str = P::NAME;

    fn forward(&self, [x, bias, residual]: [Input<'_>; 3]) -> Result<(Vec<f32>, Shape)> {
        Fused::forward(self, x, Some(bias), Some(residual))
    }
}

/// [`After`] on the product's buffers: what its tasks do to the parts they make.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// Nothing: the product as it is.
    Nothing,
    /// `bias` has a value per column.
    BiasGelu { bias: &'a [f32] },
    /// `residual` is `[rows, n]`, as the result.
    BiasAdd {
        bias: &'a [f32],
        residual: &'a [f32],
    },
}

impl Epilogue<'_> {
    /// A `[rows, n]` product made block by block on [`par_blocks_then`]'s tasks (blocks of
    /// `block_rows` x `panel_cols`, `slices` slices of the inner dimension `k`): `block(out,
    /// row_block, panel, slice)` stores its block through `out`, and each task then applies the
    /// step to the part of the result its blocks made.
    ///
    /// # Safety
    /// `block` must store every element of its block, and only those, in a result with rows of
    /// `n` (its last slice leaving the sums there).
    pub(crate) unsafe fn par_blocks(
        self,
        (rows, k, n): (usize, usize, usize),
        blocks: (usize, usize),
        slices: usize,
        block: impl Fn(DisjointOut, usize, usize, usize) + Sync,
    ) -> Vec<f32> {
        let mut y = Vec::with_capacity(rows * n);
        let out = DisjointOut::spare(&mut y);
        par_blocks_then(
            (rows, k, n),
            blocks,
            slices,
            |rb, j, slice| block(out, rb, j, slice),
            // SAFETY: each task's part of the result is its own, and its blocks wrote it.
            |rows, cols| unsafe { self.apply(out, rows, cols, n) },
        );
        // SAFETY: the blocks cover every row and column once, and each stores all of its elements
        // (the caller's promise).
        unsafe { y.set_len(rows * n) };
        y
    }

    /// Applies the step to `rows x cols` of the result (rows of `n`) in `y`.
    ///
    /// # Safety
    /// That part of the result is written and is this call's alone.
    unsafe fn apply(self, y: DisjointOut, rows: Range<usize>, cols: Range<usize>, n: usize) {
        if matches!(self, Epilogue::Nothing) || cols.is_empty() {
            return;
        }
        let part = rows.map(|r| {
            // SAFETY: row `r`'s columns `cols` (the caller's promise).
            (r, unsafe {
                std::slice::from_raw_parts_mut(y.at(r * n + cols.start), cols.len())
            })
        });
        Simd::best().run(Part {
            then: self,
            part,
            col: cols.start,
            n,
        })
    }
}

/// [`Epilogue::apply`]'s loop, compiled for the widest instructions this CPU has.
struct Part<'a, P> {
    then: Epilogue<'a>,
    /// `(row, its columns)`.
    part: P,
    col: usize,
    n: usize,
}

impl<'y, P: Iterator<Item = (usize, &'y mut [f32])>> SimdBody for Part<'_, P> {
    type Out = ();

    #[inline(always)]
    fn call(self) {
        let col = self.col;
        match self.then {
            Epilogue::Nothing => {}
            Epilogue::BiasGelu { bias } => {
                for (_, y) in self.part {
                    for (y, &b) in y.iter_mut().zip(&bias[col..]) {
                        *y = gelu(*y + b);
                    }
                }
            }
            Epilogue::BiasAdd { bias, residual } => {
                for (r, y) in self.part {
                    let residual = &residual[r * self.n + col..];
                    for ((y, &b), &x) in y.iter_mut().zip(&bias[col..]).zip(residual) {
                        *y = (*y + b) + x;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::host::AWKWARD_SHAPES;
    use crate::kernels::{bias_dropout_add, bias_gelu, fp32, int8, layer_norm};
    use candle_core::Device;
    use std::sync::Arc;

    fn tensor(len: usize, shape: (usize, usize), scale: f32) -> Tensor {
        let v = (0..len).map(|i| (i as f32 * 0.37).sin() * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A product, `x w` then `after`.
    type Run = Box<dyn Fn(&Tensor, After) -> Tensor>;

    /// Every kernel that runs here, by name.
    fn products(k: usize, n: usize) -> Vec<(String, Run)> {
        let w = tensor(k * n, (k, n), 0.2);
        let mut all: Vec<(String, Run)> = Vec::new();
        let packed = Arc::new(fp32::PackedWeight::from_tensor(&w).unwrap());
        for kernel in [fp32::Fp32Kernel::Avx512, fp32::Fp32Kernel::Portable] {
            if kernel.runs_here() {
                let packed = Arc::clone(&packed);
                all.push((
                    format!("fp32 {kernel:?}"),
                    Box::new(move |x, after| fp32::matmul(x, &packed, kernel, after).unwrap()),
                ));
            }
        }
        let packed = Arc::new(int8::PackedWeight::from_tensor(&w).unwrap());
        for kernel in int8::Int8Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
            let packed = Arc::clone(&packed);
            all.push((
                format!("int8 {}", kernel.name()),
                Box::new(move |x, after| int8::matmul_with(x, &packed, kernel, after).unwrap()),
            ));
        }
        all
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn each_step_gives_the_bits_of_its_own_pass_on_every_kernel() {
        // The awkward shapes, and one large enough for several parallel tasks.
        for (rows, k, n) in AWKWARD_SHAPES.into_iter().chain([(600, 96, 200)]) {
            let x = tensor(rows * k, (rows, k), 1.0);
            let bias = tensor(n, (1, n), 0.5).squeeze(0).unwrap();
            let residual = tensor(rows * n, (rows, n), 2.0);
            let weight = (tensor(n, (1, n), 0.3).squeeze(0).unwrap() + 1.0).unwrap();
            let norm_bias = tensor(n, (1, n), 0.1).squeeze(0).unwrap();
            for (name, product) in products(k, n) {
                let h = product(&x, After::Nothing);
                let case = format!("{name} at {rows}x{k}x{n}");
                assert_eq!(
                    bits(&product(&x, After::BiasGelu(&bias))),
                    bits(&bias_gelu(&h, &bias).unwrap()),
                    "gelu: {case}"
                );
                let after = After::BiasAdd {
                    bias: &bias,
                    residual: &residual,
                };
                let ended = bias_dropout_add(&h, &bias, &residual, 0.0, 0).unwrap();
                assert_eq!(bits(&product(&x, after)), bits(&ended), "residual: {case}");
                let norm = Norm {
                    weight: &weight,
                    bias: &norm_bias,
                    eps: 1e-12,
                };
                let after = After::BiasAddNorm {
                    bias: &bias,
                    residual: &residual,
                    norm,
                };
                assert_eq!(
                    bits(&product(&x, after)),
                    bits(&layer_norm(&ended, &weight, &norm_bias, 1e-12).unwrap()),
                    "residual and norm: {case}"
                );
            }
        }
    }

    #[test]
    fn a_bias_or_residual_of_the_wrong_shape_is_an_error() {
        let (rows, k, n) = (5, 8, 12);
        let w = Arc::new(fp32::PackedWeight::from_tensor(&tensor(k * n, (k, n), 0.2)).unwrap());
        let x = tensor(rows * k, (rows, k), 1.0);
        let short = tensor(n - 1, (1, n - 1), 0.5).squeeze(0).unwrap();
        let bias = tensor(n, (1, n), 0.5).squeeze(0).unwrap();
        let kernel = fp32::Fp32Kernel::Portable;
        assert!(fp32::matmul(&x, &w, kernel, After::BiasGelu(&short)).is_err());
        let fewer_rows = tensor(rows * n, (rows, n), 1.0)
            .narrow(0, 0, rows - 1)
            .unwrap();
        let transposed = tensor(rows * n, (n, rows), 1.0);
        for residual in [&fewer_rows, &transposed] {
            let after = After::BiasAdd {
                bias: &bias,
                residual,
            };
            assert!(fp32::matmul(&x, &w, kernel, after).is_err());
        }
        let norm = Norm {
            weight: &short,
            bias: &short,
            eps: 1e-12,
        };
        let residual = tensor(rows * n, (rows, n), 1.0);
        let after = After::BiasAddNorm {
            bias: &bias,
            residual: &residual,
            norm,
        };
        assert!(fp32::matmul(&x, &w, kernel, after).is_err());
    }
}
