//! Fused training kernels with real backward passes: LayerNorm, softmax (plain, and scaled with an
//! additive key mask), exact (erf) GELU and dropout.
//!
//! candle builds these from many small broadcast ops when they must be differentiable: a LayerNorm
//! is eight tensor ops forward and about twenty backward, each a pass over memory and a fresh
//! allocation. Here each is one pass forward and one backward, as candle custom ops whose `bwd` is
//! itself a fused kernel. They run on contiguous `f32` CPU tensors, in parallel over rows on
//! candle's CPU thread pool; every reduction is summed in a fixed order, so results do not depend
//! on the thread count. On other devices or dtypes each function falls back to the differentiable
//! composition of candle ops it replaces (the `*_reference` functions, kept public for tests).

use candle_core::{
    bail, utils::barrier_pool, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result,
    Shape, Tensor, D,
};
use std::marker::PhantomData;

/// Below this many elements touched, a kernel runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Rows per block of the LayerNorm backward's weight/bias partial sums (fixed, so the summation
/// order does not depend on the number of threads).
const LN_BLOCK_ROWS: usize = 16;

/// Elements per parallel chunk of the elementwise kernels (a multiple of 4, see [`dropout`]).
const ELEMWISE_CHUNK: usize = 1 << 14;

fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

fn as_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: expected an f32 tensor")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expected a contiguous tensor"),
    }
}

fn last_dim(l: &Layout, op: &str) -> Result<usize> {
    match l.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => bail!("{op}: expected a tensor with a non-empty last dimension"),
    }
}

// ---------------------------------------------------------------------------------------------
// Parallel loops.

/// Runs `f(i)` for `i` in `0..n`, in parallel on candle's CPU pool when `work` elements are
/// touched in all (each `i` exactly once).
fn par_for(n: usize, work: usize, f: impl Fn(usize) + Sync) {
    if n > 1 && work >= PAR_MIN {
        barrier_pool().execute_chunked(n, |range| range.for_each(&f));
    } else {
        (0..n).for_each(f);
    }
}

/// A mutable slice cut into chunks of `chunk` elements that threads take one at a time.
struct Chunks<'a> {
    ptr: *mut f32,
    len: usize,
    chunk: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

// SAFETY: `Chunks` hands out disjoint sub-slices only (see `take`).
unsafe impl Send for Chunks<'_> {}
unsafe impl Sync for Chunks<'_> {}

impl<'a> Chunks<'a> {
    fn new(s: &'a mut [f32], chunk: usize) -> Self {
        Chunks {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            chunk: chunk.max(1),
            _borrow: PhantomData,
        }
    }

    fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Chunk `i`.
    ///
    /// # Safety
    /// No chunk may be taken twice while an earlier reference to it is alive.
    unsafe fn take(&self, i: usize) -> &'a mut [f32] {
        let start = i * self.chunk;
        assert!(start < self.len);
        let len = self.chunk.min(self.len - start);
        // SAFETY: in bounds (checked above); disjointness is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// Calls `f(i, [chunk i of each output])` for every chunk index, in parallel. Each output is cut
/// into chunks of its own length; all must have the same number of chunks.
pub(crate) fn par_chunks_mut<const N: usize>(
    outs: [(&mut [f32], usize); N],
    f: impl Fn(usize, [&mut [f32]; N]) + Sync,
) {
    let work: usize = outs.iter().map(|(s, _)| s.len()).sum();
    let chunks = outs.map(|(s, c)| Chunks::new(s, c));
    let n = chunks.first().map_or(0, Chunks::count);
    assert!(
        chunks.iter().all(|c| c.count() == n),
        "par_chunks_mut: outputs with different chunk counts"
    );
    par_for(n, work, |i| {
        // SAFETY: `par_for` visits each index once, so each chunk is taken once.
        let parts = std::array::from_fn(|k| unsafe { chunks[k].take(i) });
        f(i, parts)
    });
}

// ---------------------------------------------------------------------------------------------
// Small vectorisable reductions (eight accumulators, so LLVM may use SIMD lanes).

#[inline(always)]
fn reduce8(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let full = n / 8 * 8;
    let mut i = 0;
    while i < full {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += f(i + k);
        }
        i += 8;
    }
    let mut tail = 0f32;
    for j in full..n {
        tail += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in tail {
        m = m.max(v);
    }
    m
}

// ---------------------------------------------------------------------------------------------
// LayerNorm.

/// LayerNorm over the last dimension, differentiable in `x`, `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && fused(weight) && fused(bias) {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNormOp { eps: eps as f32 },
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
    let d = x.len();
    let inv_d = 1.0 / d as f32;
    let mean = reduce8(d, |i| x[i]) * inv_d;
    let var = reduce8(d, |i| {
        let c = x[i] - mean;
        c * c
    }) * inv_d;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "newstag-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w, b) = (
            as_f32(s1, l1, name)?,
            as_f32(s2, l2, name)?,
            as_f32(s3, l3, name)?,
        );
        let d = last_dim(l1, name)?;
        if w.len() != d || b.len() != d {
            bail!(
                "{name}: weight/bias of {}/{} for rows of {d}",
                w.len(),
                b.len()
            )
        }
        let mut y = vec![0f32; x.len()];
        let rows_per_chunk = (ELEMWISE_CHUNK / d).max(1);
        par_chunks_mut([(&mut y[..], rows_per_chunk * d)], |c, [y]| {
            let x = &x[c * rows_per_chunk * d..][..y.len()];
            for (x, y) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
                let (mean, rstd) = row_stats(x, self.eps);
                for i in 0..d {
                    y[i] = (x[i] - mean) * rstd * w[i] + b[i];
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = weight.elem_count();
        let rows = x.elem_count() / d;
        let grads = x.apply_op3_no_bwd(
            weight,
            &grad.contiguous()?,
            &LayerNormBwdOp { eps: self.eps },
        )?;
        let gx = grads.narrow(0, 0, rows)?.reshape(x.shape())?;
        let gw = grads.narrow(0, rows, 1)?.reshape(weight.shape())?;
        let gb = grads.narrow(0, rows + 1, 1)?.reshape(weight.shape())?;
        Ok((Some(gx), Some(gw), Some(gb)))
    }
}

/// LayerNorm backward: `(x, weight, grad_y)` to `[rows + 2, d]`: the rows of grad_x, then
/// grad_weight and grad_bias.
struct LayerNormBwdOp {
    eps: f32,
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "newstag-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, w, g) = (
            as_f32(s1, l1, name)?,
            as_f32(s2, l2, name)?,
            as_f32(s3, l3, name)?,
        );
        let d = last_dim(l1, name)?;
        if w.len() != d || g.len() != x.len() {
            bail!("{name}: mismatched shapes")
        }
        let rows = x.len() / d;
        let blocks = rows.div_ceil(LN_BLOCK_ROWS);
        let inv_d = 1.0 / d as f32;
        let mut out = vec![0f32; (rows + 2) * d];
        let (gx, gwb) = out.split_at_mut(rows * d);
        // Per block of rows: partial sums of grad_weight and grad_bias.
        let mut partial = vec![0f32; blocks * 2 * d];
        par_chunks_mut(
            [(gx, LN_BLOCK_ROWS * d), (&mut partial[..], 2 * d)],
            |blk, [gx, part]| {
                let start = blk * LN_BLOCK_ROWS * d;
                let x = &x[start..start + gx.len()];
                let g = &g[start..start + gx.len()];
                let (pw, pb) = part.split_at_mut(d);
                for ((x, g), gx) in x
                    .chunks_exact(d)
                    .zip(g.chunks_exact(d))
                    .zip(gx.chunks_exact_mut(d))
                {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let a = reduce8(d, |i| g[i] * w[i]) * inv_d;
                    let c = reduce8(d, |i| g[i] * w[i] * ((x[i] - mean) * rstd)) * inv_d;
                    for i in 0..d {
                        let xhat = (x[i] - mean) * rstd;
                        gx[i] = rstd * (g[i] * w[i] - a - xhat * c);
                        pw[i] += g[i] * xhat;
                        pb[i] += g[i];
                    }
                }
            },
        );
        for p in partial.chunks_exact(2 * d) {
            for (acc, v) in gwb.iter_mut().zip(p) {
                *acc += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax.

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Softmax from differentiable candle ops (any device).
pub fn softmax_reference(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// `softmax(scores * scale + mask)` over the last dimension, differentiable in `scores`, for
/// attention: `scores` is `[batch, heads, queries, keys]` and `mask` (no gradient) is
/// `[batch, 1, 1, keys]`.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, _, _, k) = scores.dims4()?;
    if fused(scores) && fused(mask) && mask.dims() == [b, 1, 1, k] {
        scores.contiguous()?.apply_op2(
            &mask.contiguous()?,
            MaskedSoftmaxOp {
                scale: scale as f32,
            },
        )
    } else {
        masked_softmax_reference(scores, mask, scale)
    }
}

/// [`masked_softmax`] from differentiable candle ops (any device).
pub fn masked_softmax_reference(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(mask)?, D::Minus1)
}

/// One softmax row: `y = exp(x - max) / sum`, `x` already scaled and masked in `y`.
#[inline(always)]
fn softmax_row_in_place(y: &mut [f32]) {
    let max = max8(y);
    for v in y.iter_mut() {
        *v = (*v - max).exp();
    }
    let sum = reduce8(y.len(), |i| y[i]);
    for v in y.iter_mut() {
        *v /= sum;
    }
}

fn softmax_fwd(
    x: &[f32],
    d: usize,
    prepare: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let rows_per_chunk = (ELEMWISE_CHUNK / d).max(1);
    par_chunks_mut([(&mut y[..], rows_per_chunk * d)], |c, [y]| {
        let first = c * rows_per_chunk;
        let x = &x[first * d..][..y.len()];
        for (r, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            prepare(first + r, x, y);
            softmax_row_in_place(y);
        }
    });
    y
}

/// Softmax backward: `grad_x = scale * y * (g - sum(g * y))` per row.
fn softmax_bwd(y: &Tensor, grad: &Tensor, scale: f32) -> Result<Tensor> {
    y.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwdOp { scale })
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "newstag-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(s, l, self.name())?;
        let d = last_dim(l, self.name())?;
        let y = softmax_fwd(x, d, |_, x, y| y.copy_from_slice(x));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_bwd(y, grad, 1.0)?))
    }
}

struct MaskedSoftmaxOp {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "newstag-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, mask) = (as_f32(s1, l1, name)?, as_f32(s2, l2, name)?);
        let &[b, h, q, k] = l1.dims() else {
            bail!("{name}: expected scores [batch, heads, queries, keys]")
        };
        if mask.len() != b * k || k == 0 {
            bail!("{name}: expected a mask [batch, 1, 1, keys]")
        }
        let rows_per_item = h * q;
        let scale = self.scale;
        let y = softmax_fwd(x, k, |row, x, y| {
            let m = &mask[row / rows_per_item * k..][..k];
            for i in 0..k {
                y[i] = x[i] * scale + m[i];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _mask: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(softmax_bwd(y, grad, self.scale)?), None))
    }
}

struct SoftmaxBwdOp {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwdOp {
    fn name(&self) -> &'static str {
        "newstag-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (y, g) = (as_f32(s1, l1, name)?, as_f32(s2, l2, name)?);
        let d = last_dim(l1, name)?;
        if y.len() != g.len() {
            bail!("{name}: mismatched shapes")
        }
        let mut gx = vec![0f32; y.len()];
        let rows_per_chunk = (ELEMWISE_CHUNK / d).max(1);
        let scale = self.scale;
        par_chunks_mut([(&mut gx[..], rows_per_chunk * d)], |c, [gx]| {
            let start = c * rows_per_chunk * d;
            let (y, g) = (&y[start..][..gx.len()], &g[start..][..gx.len()]);
            for ((y, g), gx) in y
                .chunks_exact(d)
                .zip(g.chunks_exact(d))
                .zip(gx.chunks_exact_mut(d))
            {
                let s = reduce8(d, |i| g[i] * y[i]);
                for i in 0..d {
                    gx[i] = scale * (y[i] * (g[i] - s));
                }
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf).

/// erf for `f32`: the rational approximation of Eigen and XLA (`x * P(x^2) / Q(x^2)` on [-4, 4],
/// ±1 beyond), within a few units in the last place of `f32`.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_1e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`, differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(GeluErfOp)
    } else {
        x.gelu_erf()
    }
}

/// Elementwise map of one input into a fresh vector, in parallel chunks.
fn map1(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    par_chunks_mut([(&mut y[..], ELEMWISE_CHUNK)], |c, [y]| {
        let x = &x[c * ELEMWISE_CHUNK..][..y.len()];
        for (y, &x) in y.iter_mut().zip(x) {
            *y = f(x);
        }
    });
    y
}

struct GeluErfOp;

impl CustomOp1 for GeluErfOp {
    fn name(&self) -> &'static str {
        "newstag-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(s, l, self.name())?;
        let y = map1(x, |x| {
            (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfBwdOp)?,
        ))
    }
}

/// GELU backward: `g * ((1 + erf(x / sqrt 2)) / 2 + x * exp(-x^2 / 2) / sqrt(2 pi))`.
struct GeluErfBwdOp;

impl CustomOp2 for GeluErfBwdOp {
    fn name(&self) -> &'static str {
        "newstag-gelu-erf-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (x, g) = (as_f32(s1, l1, name)?, as_f32(s2, l2, name)?);
        if x.len() != g.len() {
            bail!("{name}: mismatched shapes")
        }
        // 1 / sqrt(2 pi)
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        let mut gx = vec![0f32; x.len()];
        par_chunks_mut([(&mut gx[..], ELEMWISE_CHUNK)], |c, [gx]| {
            let start = c * ELEMWISE_CHUNK;
            let (x, g) = (&x[start..][..gx.len()], &g[start..][..gx.len()]);
            for ((gx, &x), &g) in gx.iter_mut().zip(x).zip(g) {
                let cdf = (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5;
                let pdf = (-0.5 * x * x).exp() * INV_SQRT_2PI;
                *gx = g * (cdf + x * pdf);
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout.

/// SplitMix64's output function on counter `j` of stream `seed`: 64 well-mixed bits, four 16-bit
/// keep/drop draws.
#[inline(always)]
fn mix(seed: u64, j: u64) -> u64 {
    let mut z = seed.wrapping_add(j.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Inverted dropout with drop probability `p` (quantised to 1/65536): element `i` is kept (and
/// scaled by `1 / (1 - p)`) when 16-bit draw `i` of the counter-based stream `seed` is at least
/// `p * 65536`. The mask is a pure function of `(seed, p, i)`: it is the same on every device and
/// thread count, and the backward pass recomputes it instead of storing it.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    if fused(x) {
        x.contiguous()?.apply_op1(DropoutOp::new(p, seed))
    } else {
        dropout_reference(x, p, seed)
    }
}

/// [`dropout`] as a product with an explicit mask tensor (any device; the same mask).
pub fn dropout_reference(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let mask = DropoutOp::new(p, seed).mask(x.elem_count());
    let mask = Tensor::from_vec(mask, x.shape(), x.device())?;
    x.mul(&mask.to_dtype(x.dtype())?)
}

#[derive(Clone, Copy)]
struct DropoutOp {
    seed: u64,
    threshold: u64,
    scale: f32,
}

impl DropoutOp {
    fn new(p: f32, seed: u64) -> Self {
        DropoutOp {
            seed,
            threshold: ((p as f64 * 65536.0).round() as u64).min(65535),
            scale: 1.0 / (1.0 - p),
        }
    }

    /// Applies the mask to `x`, whose first element is element `start` of the tensor (a
    /// multiple of 4).
    #[inline(always)]
    fn apply(&self, start: usize, x: &[f32], y: &mut [f32]) {
        debug_assert_eq!(start % 4, 0);
        for (k, (x4, y4)) in x.chunks(4).zip(y.chunks_mut(4)).enumerate() {
            let bits = mix(self.seed, (start / 4 + k) as u64);
            for (lane, (&x, y)) in x4.iter().zip(y4.iter_mut()).enumerate() {
                let draw = (bits >> (16 * lane)) & 0xFFFF;
                *y = if draw >= self.threshold {
                    x * self.scale
                } else {
                    0.0
                };
            }
        }
    }

    /// The mask itself (for devices without the fused kernel).
    fn mask(&self, n: usize) -> Vec<f32> {
        let ones = vec![1f32; n];
        let mut m = vec![0f32; n];
        self.apply(0, &ones, &mut m);
        m
    }
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "newstag-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        par_chunks_mut([(&mut y[..], ELEMWISE_CHUNK)], |c, [y]| {
            let start = c * ELEMWISE_CHUNK;
            self.apply(start, &x[start..][..y.len()], y);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // Dropout is linear: the gradient goes through the same mask.
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let want = libm_erf(x);
            let got = erf_f32(x as f32) as f64;
            worst = worst.max((got - want).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction for erfc (beyond).
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let a = x.abs();
            let mut f = 0.0;
            for n in (1..100).rev() {
                f = (n as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn dropout_drops_about_p_and_is_deterministic() {
        let op = DropoutOp::new(0.1, 42);
        let m = op.mask(100_000);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(m, DropoutOp::new(0.1, 42).mask(100_000));
        assert_ne!(m, DropoutOp::new(0.1, 43).mask(100_000));
    }
}
