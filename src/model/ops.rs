//! Fused training kernels with real backward passes: LayerNorm, softmax (plain, and scaled with an
//! additive key mask, optionally followed by dropout), exact (erf) GELU, dropout, and the bias
//! additions of the encoder's linear layers fused with what follows them (splitting heads, GELU,
//! dropout and the residual sum).
//!
//! candle builds these from many small broadcast ops when they must be differentiable: a LayerNorm
//! is eight tensor ops forward and about twenty backward, each a pass over memory and a fresh
//! allocation, and its backward pass adds two more passes per op (a zero gradient, then a sum). Here
//! each is one pass forward and one backward, as candle custom ops whose `bwd` is itself a fused
//! kernel. They run on contiguous `f32` CPU tensors, in parallel over rows on rayon's thread pool;
//! every reduction is summed in a fixed order, so results depend neither on the thread count nor
//! on how much padding follows a row.
//! On other devices or dtypes each function falls back to the differentiable composition of candle
//! ops it replaces (the `*_reference` functions, kept public for tests).

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use std::marker::PhantomData;

/// Below this many elements touched, a kernel runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Rows per block of the partial column sums of the backward passes (bias and LayerNorm
/// gradients; fixed, so the summation order does not depend on the number of threads).
const BLOCK_ROWS: usize = 16;

/// Elements per parallel chunk of the elementwise kernels (a multiple of 4, see [`dropout`]).
const ELEMWISE_CHUNK: usize = 1 << 14;

/// Makes glibc's allocator keep freed buffers of up to 32 MiB for reuse instead of returning
/// them to the system, from one arena (once per process; a no-op elsewhere). Training steps and
/// inference batches allocate and free the same large activation buffers over and over: by default
/// each is a fresh `mmap` whose every page faults in and is zeroed by the kernel, about a sixth of
/// a training step's time and a fifth of inference's on CPU. One arena instead of one per thread
/// keeps the memory this holds to one working set (`tag` over 10,000 articles: 462 MiB peak, against
/// 493 MiB with an arena per thread).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use std::os::raw::c_int;
            extern "C" {
                fn mallopt(param: c_int, value: c_int) -> c_int;
            }
            const M_TRIM_THRESHOLD: c_int = -1;
            const M_MMAP_THRESHOLD: c_int = -3;
            const M_ARENA_MAX: c_int = -8;
            // SAFETY: mallopt only adjusts allocator parameters; both values are in range (the
            // mmap threshold's maximum on 64-bit glibc is 32 MiB).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 256 << 20);
                mallopt(M_ARENA_MAX, 1);
            }
        });
    }
}

/// Whether the fused kernels run on `x` (`f32` on CPU) rather than their
/// fallbacks.
pub fn runs_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// The `f32` elements of a contiguous CPU tensor.
pub(crate) fn as_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
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

/// Runs `f(i)` for `i` in `0..n`, in parallel when `work` elements are touched in all (each `i`
/// exactly once). On rayon's pool, the one candle's matrix multiply runs on: with candle's own
/// pool as well, its threads spin after each kernel while the multiply's threads want the cores.
pub(crate) fn par_for(n: usize, work: usize, f: impl Fn(usize) + Sync) {
    if n > 1 && work >= PAR_MIN {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(&f);
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

/// An output buffer that parallel tasks write through, each to its own elements (blocks of a
/// matrix that are not contiguous chunks, as [`par_chunks_mut`] hands out).
#[derive(Clone, Copy)]
pub(crate) struct DisjointOut(*mut f32);

// SAFETY: the users of `at` promise that no two tasks write the same element.
unsafe impl Send for DisjointOut {}
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    pub(crate) fn new(buffer: &mut [f32]) -> Self {
        DisjointOut(buffer.as_mut_ptr())
    }

    /// Element `offset` of the buffer.
    ///
    /// # Safety
    /// `offset` must lie inside the buffer, which must outlive the writes; no other task may
    /// write the elements written through this pointer.
    pub(crate) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's promise.
        unsafe { self.0.add(offset) }
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
// Small vectorisable reductions (eight accumulators, so LLVM may use SIMD lanes). The tail of a
// row goes into the same lanes as a zero-padded chunk would: a row's sum is then bit-identical
// however much zero padding follows it (an article's scores do not depend on its batch-mates).

#[inline(always)]
fn combine8(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `sum(f(a[i]))`.
#[inline(always)]
fn sum1(a: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(c[k]);
        }
    }
    for (k, &v) in tail.iter().enumerate() {
        acc[k] += f(v);
    }
    combine8(acc)
}

/// `sum(f(a[i], b[i]))` over `a.len()` elements.
#[inline(always)]
fn sum2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = ca.remainder().iter().zip(cb.remainder());
    for (a, b) in ca.zip(cb) {
        let a: &[f32; 8] = a.try_into().expect("chunks of 8");
        let b: &[f32; 8] = b.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(a[k], b[k]);
        }
    }
    for (k, (&a, &b)) in tails.enumerate() {
        acc[k] += f(a, b);
    }
    combine8(acc)
}

/// `sum(f(a[i], b[i], c[i]))` over `a.len()` elements.
#[inline(always)]
fn sum3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let (b, c) = (&b[..a.len()], &c[..a.len()]);
    let mut acc = [0f32; 8];
    let (ca, cb, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tails = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .zip(cc.remainder());
    for (k, ((&a, &b), &c)) in tails.enumerate() {
        acc[k] += f(a, b, c);
    }
    for ((a, b), c) in ca.zip(cb).zip(cc) {
        let a: &[f32; 8] = a.try_into().expect("chunks of 8");
        let b: &[f32; 8] = b.try_into().expect("chunks of 8");
        let c: &[f32; 8] = c.try_into().expect("chunks of 8");
        for k in 0..8 {
            acc[k] += f(a[k], b[k], c[k]);
        }
    }
    combine8(acc)
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

/// `e^x` for `f32` (Cephes' `expf`: a degree-7 polynomial after reduction by ln 2), within 2 units
/// in the last place, in a form LLVM vectorises; exactly 0 below -87 (so a -1e9 mask bias gives
/// exactly 0, as `expf` does).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer, which its low mantissa bits then hold.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        e * two_n
    }
}

/// Runs `f(first_row, rows, sums)` over blocks of `block` rows of an `[rows, n]` result, where
/// `sums` holds `k` column-sum vectors of length `n` for the block; returns `[rows + k, n]`: the
/// rows, then the `k` column sums over all rows (summed block by block, in order).
fn rows_and_column_sums(
    rows: usize,
    n: usize,
    k: usize,
    block: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let blocks = rows.div_ceil(block);
    let mut out = vec![0f32; (rows + k) * n];
    let (body, total) = out.split_at_mut(rows * n);
    let mut partial = vec![0f32; blocks * k * n];
    if blocks > 0 {
        par_chunks_mut(
            [(body, block * n), (&mut partial[..], k * n)],
            |b, [rows, sums]| f(b * block, rows, sums),
        );
    }
    for p in partial.chunks_exact(k * n) {
        for (acc, v) in total.iter_mut().zip(p) {
            *acc += v;
        }
    }
    out
}

/// Splits `[rows + k, n]` from [`rows_and_column_sums`] into the rows (reshaped to `shape`) and
/// the `k` sums.
fn split_rows_and_sums(
    t: &Tensor,
    rows: usize,
    k: usize,
    shape: &Shape,
) -> Result<(Tensor, Vec<Tensor>)> {
    let body = t.narrow(0, 0, rows)?.reshape(shape)?;
    let sums = (0..k)
        .map(|i| t.narrow(0, rows + i, 1)?.squeeze(0))
        .collect::<Result<_>>()?;
    Ok((body, sums))
}

// ---------------------------------------------------------------------------------------------
// LayerNorm.

/// LayerNorm over the last dimension, differentiable in `x`, `weight` and `bias`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if runs_fused(x) && runs_fused(weight) && runs_fused(bias) {
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
    let inv_d = 1.0 / x.len() as f32;
    let mean = sum1(x, |v| v) * inv_d;
    let var = sum1(x, |v| (v - mean) * (v - mean)) * inv_d;
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
                for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                    *y = (x - mean) * rstd * w + b;
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
        let (gx, sums) = split_rows_and_sums(&grads, rows, 2, x.shape())?;
        let gw = sums[0].reshape(weight.shape())?;
        let gb = sums[1].reshape(weight.shape())?;
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
        let inv_d = 1.0 / d as f32;
        let out = rows_and_column_sums(rows, d, 2, BLOCK_ROWS, |first, gx, part| {
            let start = first * d;
            let x = &x[start..start + gx.len()];
            let g = &g[start..start + gx.len()];
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
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax.

/// Softmax over the last dimension, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if runs_fused(x) {
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
    if runs_fused(scores) && runs_fused(mask) && mask.dims() == [b, 1, 1, k] {
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

/// `y = x * scale + m`.
#[inline(always)]
fn scale_add(x: &[f32], scale: f32, m: &[f32], y: &mut [f32]) {
    for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
        *y = x * scale + m;
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

/// Fills each output row from the input row with `row(index, x, y)`, in parallel.
fn map_rows(x: &[f32], d: usize, row: impl Fn(usize, &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    let rows_per_chunk = (ELEMWISE_CHUNK / d).max(1);
    par_chunks_mut([(&mut y[..], rows_per_chunk * d)], |c, [y]| {
        let first = c * rows_per_chunk;
        let x = &x[first * d..][..y.len()];
        for (r, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            row(first + r, x, y);
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
        let y = map_rows(x, d, |_, x, y| {
            y.copy_from_slice(x);
            softmax_row_in_place(y);
        });
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
        let (rows_per_item, k) = attention_dims(l1, mask, name)?;
        let scale = self.scale;
        let y = map_rows(x, k, |row, x, y| {
            scale_add(x, scale, mask_row(mask, row, rows_per_item, k), y);
            softmax_row_in_place(y);
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
                softmax_row_bwd(y, g, scale, gx);
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// GELU (erf).

/// erf for `f32`: the rational approximation of Eigen and XLA (`x * P(x^2) / Q(x^2)` on [-4, 4],
/// ±1 beyond), within 4.2e-7 of erf. Branch-free and in `f32`, so LLVM vectorises it 16 lanes
/// wide (in `f64`, to within 1e-7, GELU took a tenth of inference time).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`, differentiable.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if runs_fused(x) {
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
                let pdf = exp_f32(-0.5 * x * x) * INV_SQRT_2PI;
                *gx = g * (cdf + x * pdf);
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Dropout.

/// wyrand's output function on counter `j` of stream `seed`: 64 well-mixed bits (four 16-bit
/// keep/drop draws) from one 64 x 64 -> 128-bit multiply.
#[inline(always)]
fn mix(seed: u64, j: u64) -> u64 {
    let s = seed.wrapping_add(j.wrapping_add(1).wrapping_mul(0xA076_1D64_78BD_642F));
    let t = (s as u128).wrapping_mul((s ^ 0xE703_7ED1_A0B4_28DB) as u128);
    ((t >> 64) ^ t) as u64
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
    if runs_fused(x) {
        x.contiguous()?.apply_op1(DropoutOp::new(p, seed))
    } else {
        dropout_reference(x, p, seed)
    }
}

/// [`dropout`] as a product with an explicit mask tensor. On CPU the mask is [`dropout`]'s (the
/// counter stream `seed`), built on the host. On any other device it is drawn there by
/// [`device_mask`] from the device's own generator (`seed` unused): building tens of millions of
/// mask values per training step on one host thread and uploading them would dominate the step.
pub fn dropout_reference(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let mask = if x.device().is_cpu() {
        let mask = DropoutOp::new(p, seed).mask(x.elem_count());
        Tensor::from_vec(mask, x.shape(), x.device())?
    } else {
        device_mask(x, p)?
    };
    x.mul(&mask.to_dtype(x.dtype())?)
}

/// An inverted-dropout mask for `x` (f32, `x`'s shape and device): 0 with probability `p`, else
/// `1 / (1 - p)`, from uniform draws made on `x`'s device by candle's generator (cuRAND on CUDA,
/// seeded with `Device::set_seed`), so no mask value crosses to or from the host. It runs on CPU
/// too (candle's unseeded generator there), which is how its keep rate is tested; CPU training
/// uses the counter stream of [`dropout`] instead.
pub fn device_mask(x: &Tensor, p: f32) -> Result<Tensor> {
    let uniform = Tensor::rand(0f32, 1f32, x.shape(), x.device())?;
    // The same f32 scale as the counter-stream kernels.
    let scale = (1.0f32 / (1.0 - p.clamp(0.0, 0.999_999))) as f64;
    uniform
        .ge(p as f64)?
        .to_dtype(DType::F32)?
        .affine(scale, 0.0)
}

#[derive(Clone, Copy)]
struct DropoutOp {
    seed: u64,
    threshold: u64,
    scale: f32,
}

impl DropoutOp {
    /// Drop probability `p` in `[0, 1)` (0: the identity).
    fn new(p: f32, seed: u64) -> Self {
        let p = p.max(0.0);
        DropoutOp {
            seed,
            threshold: ((p as f64 * 65536.0).round() as u64).min(65535),
            scale: 1.0 / (1.0 - p),
        }
    }

    /// The mask values (0 or `1 / (1 - p)`) of the four elements of mask word `word` (elements
    /// `4 * word..4 * word + 4` of the tensor).
    #[inline(always)]
    fn factors(&self, word: usize) -> [f32; 4] {
        let bits = mix(self.seed, word as u64);
        let f = |lane: u32| {
            if (bits >> (16 * lane)) & 0xFFFF >= self.threshold {
                self.scale
            } else {
                0.0
            }
        };
        [f(0), f(1), f(2), f(3)]
    }

    /// Whether the mask keeps everything unscaled (`p` = 0, as at inference).
    fn is_identity(&self) -> bool {
        self.threshold == 0 && self.scale == 1.0
    }

    /// `y = mask * x` for elements `start..start + x.len()` of the tensor.
    #[inline(always)]
    fn apply(&self, start: usize, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let y = &mut y[..n];
        if self.is_identity() {
            y.copy_from_slice(x);
            return;
        }
        // Up to the next multiple of 4, then four at a time.
        let lane = start % 4;
        let head = if lane == 0 { 0 } else { (4 - lane).min(n) };
        if head > 0 {
            let m = self.factors(start / 4);
            for l in 0..head {
                y[l] = x[l] * m[lane + l];
            }
        }
        let (x, y) = (&x[head..], &mut y[head..]);
        let first = (start + head) / 4;
        let mut ys = y.chunks_exact_mut(4);
        let mut xs = x.chunks_exact(4);
        for (w, (y, x)) in (&mut ys).zip(&mut xs).enumerate() {
            let m = self.factors(first + w);
            y[0] = x[0] * m[0];
            y[1] = x[1] * m[1];
            y[2] = x[2] * m[2];
            y[3] = x[3] * m[3];
        }
        let (y, x) = (ys.into_remainder(), xs.remainder());
        if !y.is_empty() {
            let m = self.factors(first + (n - head) / 4);
            for l in 0..y.len() {
                y[l] = x[l] * m[l];
            }
        }
    }

    /// `y = mask * y` in place, for elements `start..start + y.len()` of the tensor.
    #[inline(always)]
    fn apply_in_place(&self, start: usize, y: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        let n = y.len();
        let lane = start % 4;
        let head = if lane == 0 { 0 } else { (4 - lane).min(n) };
        if head > 0 {
            let m = self.factors(start / 4);
            for l in 0..head {
                y[l] *= m[lane + l];
            }
        }
        let y = &mut y[head..];
        let first = (start + head) / 4;
        let mut ys = y.chunks_exact_mut(4);
        for (w, y) in (&mut ys).enumerate() {
            let m = self.factors(first + w);
            y[0] *= m[0];
            y[1] *= m[1];
            y[2] *= m[2];
            y[3] *= m[3];
        }
        let y = ys.into_remainder();
        if !y.is_empty() {
            let m = self.factors(first + (n - head) / 4);
            for l in 0..y.len() {
                y[l] *= m[l];
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

// ---------------------------------------------------------------------------------------------
// Attention probabilities: masked softmax then dropout, in one op.

/// `dropout(softmax(scores * scale + mask), p, seed)`: the attention probabilities of
/// [`masked_softmax`] with the dropout of [`dropout`] (the same mask), in one op whose backward
/// pass recomputes the softmax instead of keeping it.
pub fn attention_probs(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    if p <= 0.0 {
        return masked_softmax(scores, mask, scale);
    }
    let (b, _, _, k) = scores.dims4()?;
    if runs_fused(scores) && runs_fused(mask) && mask.dims() == [b, 1, 1, k] && p < 1.0 {
        scores.contiguous()?.apply_op2(
            &mask.contiguous()?,
            AttentionProbsOp {
                scale: scale as f32,
                drop: DropoutOp::new(p, seed),
            },
        )
    } else {
        attention_probs_reference(scores, mask, scale, p, seed)
    }
}

/// [`attention_probs`] from differentiable candle ops (any device).
pub fn attention_probs_reference(
    scores: &Tensor,
    mask: &Tensor,
    scale: f64,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    dropout_reference(&masked_softmax_reference(scores, mask, scale)?, p, seed)
}

/// The mask row of softmax row `row` of scores `[b, h, q, k]`.
fn mask_row(mask: &[f32], row: usize, rows_per_item: usize, k: usize) -> &[f32] {
    &mask[row / rows_per_item * k..][..k]
}

fn attention_dims(l1: &Layout, mask: &[f32], op: &str) -> Result<(usize, usize)> {
    let &[b, h, q, k] = l1.dims() else {
        bail!("{op}: expected scores [batch, heads, queries, keys]")
    };
    if mask.len() != b * k || k == 0 {
        bail!("{op}: expected a mask [batch, 1, 1, keys]")
    }
    Ok((h * q, k))
}

struct AttentionProbsOp {
    scale: f32,
    drop: DropoutOp,
}

impl CustomOp2 for AttentionProbsOp {
    fn name(&self) -> &'static str {
        "newstag-attention-probs"
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
        let (rows_per_item, k) = attention_dims(l1, mask, name)?;
        let scale = self.scale;
        let y = map_rows(x, k, |row, x, y| {
            scale_add(x, scale, mask_row(mask, row, rows_per_item, k), y);
            softmax_row_in_place(y);
            self.drop.apply_in_place(row * k, y);
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        scores: &Tensor,
        mask: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = scores.apply_op3_no_bwd(
            mask,
            &grad.contiguous()?,
            &AttentionProbsBwdOp {
                scale: self.scale,
                drop: self.drop,
            },
        )?;
        Ok((Some(g), None))
    }
}

/// Backward of [`AttentionProbsOp`] from `(scores, mask, grad)`: recomputes each softmax row `y`,
/// takes the gradient through the dropout mask (`g'`), then `scale * y * (g' - sum(g' * y))`.
struct AttentionProbsBwdOp {
    scale: f32,
    drop: DropoutOp,
}

impl CustomOp3 for AttentionProbsBwdOp {
    fn name(&self) -> &'static str {
        "newstag-attention-probs-bwd"
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
        let (x, mask, g) = (
            as_f32(s1, l1, name)?,
            as_f32(s2, l2, name)?,
            as_f32(s3, l3, name)?,
        );
        let (rows_per_item, k) = attention_dims(l1, mask, name)?;
        if g.len() != x.len() {
            bail!("{name}: mismatched shapes")
        }
        let scale = self.scale;
        let mut gx = vec![0f32; x.len()];
        let rows_per_chunk = (ELEMWISE_CHUNK / k).max(1);
        par_chunks_mut([(&mut gx[..], rows_per_chunk * k)], |c, [gx]| {
            let first = c * rows_per_chunk;
            let start = first * k;
            let (x, g) = (&x[start..][..gx.len()], &g[start..][..gx.len()]);
            let mut gd = vec![0f32; k];
            for (r, ((x, g), y)) in x
                .chunks_exact(k)
                .zip(g.chunks_exact(k))
                .zip(gx.chunks_exact_mut(k))
                .enumerate()
            {
                let row = first + r;
                scale_add(x, scale, mask_row(mask, row, rows_per_item, k), y);
                softmax_row_in_place(y);
                self.drop.apply(row * k, g, &mut gd);
                let s = sum2(&gd, y, |g, y| g * y);
                for (y, &g) in y.iter_mut().zip(&gd) {
                    *y = scale * (*y * (g - s));
                }
            }
        });
        Ok((CpuStorage::F32(gx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------------------------------------
// Small linear layers (the heads) at inference, one dot product per output.

/// `x weight^T + bias` for `x` `[rows, in]`, `weight` `[out, in]`: every output is one dot product
/// summed in a fixed order, so a row's result does not depend on how many rows come with it (a
/// matrix multiply picks other kernels, hence other summation orders, for other row counts). For
/// the heads at inference, where `out` is small; no gradient.
pub fn linear_rows(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (out, input) = weight.dims2()?;
    if x.dim(D::Minus1)? != input || bias.dims() != [out] {
        bail!("linear_rows: expected x [rows, {input}] and bias [{out}]")
    }
    if runs_fused(x) && runs_fused(weight) && runs_fused(bias) {
        x.contiguous()?.apply_op3_no_bwd(
            &weight.detach().contiguous()?,
            &bias.detach().contiguous()?,
            &LinearRowsOp,
        )
    } else {
        x.broadcast_matmul(&weight.t()?)?.broadcast_add(bias)
    }
}

struct LinearRowsOp;

impl CustomOp3 for LinearRowsOp {
    fn name(&self) -> &'static str {
        "newstag-linear-rows"
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
        let (input, out) = (last_dim(l1, name)?, b.len());
        let mut y = vec![0f32; x.len() / input * out];
        let rows_per_chunk = (ELEMWISE_CHUNK / (input * out).max(1)).max(1);
        par_chunks_mut([(&mut y[..], rows_per_chunk * out)], |c, [y]| {
            let x = &x[c * rows_per_chunk * input..];
            for (y, x) in y.chunks_exact_mut(out).zip(x.chunks_exact(input)) {
                for ((y, w), &b) in y.iter_mut().zip(w.chunks_exact(input)).zip(b) {
                    *y = sum2(x, w, |x, w| x * w) + b;
                }
            }
        });
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("a last dimension") = out;
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
}

// ---------------------------------------------------------------------------------------------
// Bias additions fused with what follows them.

fn check_bias(h: &Tensor, bias: &Tensor) -> Result<usize> {
    let n = h.dim(candle_core::D::Minus1)?;
    if bias.dims() != [n] {
        bail!("bias of shape {:?} for rows of {n}", bias.dims())
    }
    Ok(n)
}

/// Per-head layout of attention inputs.
#[derive(Clone, Copy)]
struct Heads {
    batch: usize,
    len: usize,
    heads: usize,
    size: usize,
    /// `[batch, heads, size, len]` instead of `[batch, heads, len, size]`.
    transposed: bool,
}

impl Heads {
    fn hidden(&self) -> usize {
        self.heads * self.size
    }

    fn shape(&self) -> Shape {
        if self.transposed {
            Shape::from((self.batch, self.heads, self.size, self.len))
        } else {
            Shape::from((self.batch, self.heads, self.len, self.size))
        }
    }

    /// Index in the per-head layout of element `(b, t, head, e)`.
    #[inline(always)]
    fn index(&self, b: usize, head: usize, t: usize, e: usize) -> usize {
        let base = (b * self.heads + head) * self.len * self.size;
        if self.transposed {
            base + e * self.len + t
        } else {
            base + t * self.size + e
        }
    }

    /// Rows `[batch * len, hidden]` (plus `bias`) to the per-head layout.
    fn rows_to_heads(&self, h: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (hidden, block) = (self.hidden(), self.len * self.size);
        let mut out = vec![0f32; h.len()];
        par_chunks_mut([(&mut out[..], block)], |c, [out]| {
            let (b, head) = (c / self.heads, c % self.heads);
            let first = self.index(b, head, 0, 0);
            for t in 0..self.len {
                let row = &h[(b * self.len + t) * hidden + head * self.size..][..self.size];
                for (e, &v) in row.iter().enumerate() {
                    let v = match bias {
                        Some(bias) => v + bias[head * self.size + e],
                        None => v,
                    };
                    out[self.index(b, head, t, e) - first] = v;
                }
            }
        });
        out
    }

    /// The per-head layout back to rows `[batch * len, hidden]`, followed by their column sums
    /// when `sums` (as [`rows_and_column_sums`]).
    fn heads_to_rows(&self, g: &[f32], sums: bool) -> Vec<f32> {
        let hidden = self.hidden();
        let rows = self.batch * self.len;
        let fill = |first: usize, out: &mut [f32], part: Option<&mut [f32]>| {
            for (r, out) in out.chunks_exact_mut(hidden).enumerate() {
                let (b, t) = ((first + r) / self.len, (first + r) % self.len);
                for head in 0..self.heads {
                    for e in 0..self.size {
                        out[head * self.size + e] = g[self.index(b, head, t, e)];
                    }
                }
            }
            if let Some(part) = part {
                for out in out.chunks_exact(hidden) {
                    for (p, v) in part.iter_mut().zip(out) {
                        *p += v;
                    }
                }
            }
        };
        if sums {
            rows_and_column_sums(rows, hidden, 1, BLOCK_ROWS, |first, out, part| {
                fill(first, out, Some(part))
            })
        } else {
            let mut out = vec![0f32; rows * hidden];
            par_chunks_mut([(&mut out[..], BLOCK_ROWS * hidden)], |c, [out]| {
                fill(c * BLOCK_ROWS, out, None)
            });
            out
        }
    }
}

/// `h + bias` (`h`: `[batch * len, heads * size]`) split into attention heads: `[batch, heads,
/// len, size]`, or `[batch, heads, size, len]` when `transposed` (keys, ready for `q k^T`).
pub fn bias_split_heads(
    h: &Tensor,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    transposed: bool,
) -> Result<Tensor> {
    let (rows, hidden) = h.dims2()?;
    check_bias(h, bias)?;
    if heads == 0 || hidden % heads != 0 || batch == 0 || rows % batch != 0 {
        bail!(
            "bias_split_heads: cannot split [{rows}, {hidden}] into {batch} items of {heads} heads"
        )
    }
    let dims = Heads {
        batch,
        len: rows / batch,
        heads,
        size: hidden / heads,
        transposed,
    };
    if runs_fused(h) && runs_fused(bias) {
        h.contiguous()?
            .apply_op2(&bias.contiguous()?, SplitHeadsOp(dims))
    } else {
        bias_split_heads_reference(h, bias, batch, heads, transposed)
    }
}

/// [`bias_split_heads`] from differentiable candle ops (any device).
pub fn bias_split_heads_reference(
    h: &Tensor,
    bias: &Tensor,
    batch: usize,
    heads: usize,
    transposed: bool,
) -> Result<Tensor> {
    let (rows, hidden) = h.dims2()?;
    let t = h
        .broadcast_add(bias)?
        .reshape((batch, rows / batch, heads, hidden / heads))?
        .transpose(1, 2)?;
    if transposed {
        t.transpose(2, 3)?.contiguous()
    } else {
        t.contiguous()
    }
}

/// Attention heads `[batch, heads, len, size]` merged back into rows `[batch * len, heads * size]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (batch, heads, len, size) = x.dims4()?;
    let dims = Heads {
        batch,
        len,
        heads,
        size,
        transposed: false,
    };
    if runs_fused(x) {
        x.contiguous()?.apply_op1(MergeHeadsOp(dims))
    } else {
        merge_heads_reference(x)
    }
}

/// [`merge_heads`] from differentiable candle ops (any device).
pub fn merge_heads_reference(x: &Tensor) -> Result<Tensor> {
    let (batch, heads, len, size) = x.dims4()?;
    x.transpose(1, 2)?.reshape((batch * len, heads * size))
}

struct SplitHeadsOp(Heads);

impl CustomOp2 for SplitHeadsOp {
    fn name(&self) -> &'static str {
        "newstag-bias-split-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (h, bias) = (as_f32(s1, l1, name)?, as_f32(s2, l2, name)?);
        let d = self.0;
        if h.len() != d.batch * d.len * d.hidden() || bias.len() != d.hidden() {
            bail!("{name}: mismatched shapes")
        }
        Ok((CpuStorage::F32(d.rows_to_heads(h, Some(bias))), d.shape()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rows = h.dim(0)?;
        let g = grad.contiguous()?.apply_op1_no_bwd(&HeadsToRowsOp {
            dims: self.0,
            sums: true,
        })?;
        let (gh, sums) = split_rows_and_sums(&g, rows, 1, h.shape())?;
        Ok((Some(gh), Some(sums[0].reshape(bias.shape())?)))
    }
}

struct MergeHeadsOp(Heads);

impl CustomOp1 for MergeHeadsOp {
    fn name(&self) -> &'static str {
        "newstag-merge-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = as_f32(s, l, self.name())?;
        let d = self.0;
        let out = d.heads_to_rows(x, false);
        Ok((
            CpuStorage::F32(out),
            Shape::from((d.batch * d.len, d.hidden())),
        ))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad
            .contiguous()?
            .apply_op1_no_bwd(&RowsToHeadsOp(self.0))?;
        Ok(Some(g))
    }
}

/// Per-head layout to rows, with their column sums when `sums` (a backward pass).
struct HeadsToRowsOp {
    dims: Heads,
    sums: bool,
}

impl CustomOp1 for HeadsToRowsOp {
    fn name(&self) -> &'static str {
        "newstag-heads-to-rows"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(s, l, self.name())?;
        let d = self.dims;
        if g.len() != d.batch * d.len * d.hidden() {
            bail!("{}: mismatched shapes", self.name())
        }
        let rows = d.batch * d.len + usize::from(self.sums);
        Ok((
            CpuStorage::F32(d.heads_to_rows(g, self.sums)),
            Shape::from((rows, d.hidden())),
        ))
    }
}

/// Rows to the per-head layout, without bias (a backward pass).
struct RowsToHeadsOp(Heads);

impl CustomOp1 for RowsToHeadsOp {
    fn name(&self) -> &'static str {
        "newstag-rows-to-heads"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(s, l, self.name())?;
        let d = self.0;
        if g.len() != d.batch * d.len * d.hidden() {
            bail!("{}: mismatched shapes", self.name())
        }
        Ok((CpuStorage::F32(d.rows_to_heads(g, None)), d.shape()))
    }
}

/// `gelu_erf(h + bias)` over the last dimension, differentiable in `h` and `bias`.
pub fn bias_gelu(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check_bias(h, bias)?;
    if runs_fused(h) && runs_fused(bias) {
        h.contiguous()?.apply_op2(&bias.contiguous()?, BiasGeluOp)
    } else {
        bias_gelu_reference(h, bias)
    }
}

/// [`bias_gelu`] from differentiable candle ops (any device).
pub fn bias_gelu_reference(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    h.broadcast_add(bias)?.gelu_erf()
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    // 1 / sqrt(2 pi)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = (erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5;
    cdf + x * exp_f32(-0.5 * x * x) * INV_SQRT_2PI
}

struct BiasGeluOp;

impl CustomOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "newstag-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = self.name();
        let (h, bias) = (as_f32(s1, l1, name)?, as_f32(s2, l2, name)?);
        let n = bias.len();
        let mut y = vec![0f32; h.len()];
        let rows_per_chunk = (ELEMWISE_CHUNK / n).max(1);
        par_chunks_mut([(&mut y[..], rows_per_chunk * n)], |c, [y]| {
            let h = &h[c * rows_per_chunk * n..][..y.len()];
            for (h, y) in h.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                for ((y, &h), &b) in y.iter_mut().zip(h).zip(bias) {
                    *y = gelu(h + b);
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = bias.elem_count();
        let rows = h.elem_count() / n;
        let g = h.apply_op3_no_bwd(bias, &grad.contiguous()?, &BiasGeluBwdOp)?;
        let (gh, sums) = split_rows_and_sums(&g, rows, 1, h.shape())?;
        Ok((Some(gh), Some(sums[0].reshape(bias.shape())?)))
    }
}

/// Backward of [`BiasGeluOp`] from `(h, bias, grad)`: `[rows + 1, n]`, the gradient of `h` then
/// that of `bias`.
struct BiasGeluBwdOp;

impl CustomOp3 for BiasGeluBwdOp {
    fn name(&self) -> &'static str {
        "newstag-bias-gelu-bwd"
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
        let (h, bias, g) = (
            as_f32(s1, l1, name)?,
            as_f32(s2, l2, name)?,
            as_f32(s3, l3, name)?,
        );
        let n = bias.len();
        if g.len() != h.len() || n == 0 || h.len() % n != 0 {
            bail!("{name}: mismatched shapes")
        }
        let rows = h.len() / n;
        let out = rows_and_column_sums(rows, n, 1, BLOCK_ROWS, |first, gh, part| {
            let start = first * n;
            let (h, g) = (&h[start..][..gh.len()], &g[start..][..gh.len()]);
            for ((h, g), gh) in h
                .chunks_exact(n)
                .zip(g.chunks_exact(n))
                .zip(gh.chunks_exact_mut(n))
            {
                for ((((gh, &h), &g), &b), p) in
                    gh.iter_mut().zip(h).zip(g).zip(bias).zip(part.iter_mut())
                {
                    *gh = g * gelu_grad(h + b);
                    *p += *gh;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, n))))
    }
}

/// `dropout(h + bias, p, seed) + residual` (the mask of [`dropout`] on `h + bias`),
/// differentiable in all three.
pub fn bias_dropout_add(
    h: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    check_bias(h, bias)?;
    if h.dims() != residual.dims() {
        bail!(
            "bias_dropout_add: shapes {:?} and {:?}",
            h.dims(),
            residual.dims()
        )
    }
    if runs_fused(h) && runs_fused(bias) && runs_fused(residual) && p < 1.0 {
        h.contiguous()?.apply_op3(
            &bias.contiguous()?,
            &residual.contiguous()?,
            BiasDropoutAddOp(DropoutOp::new(p, seed)),
        )
    } else {
        bias_dropout_add_reference(h, bias, residual, p, seed)
    }
}

/// [`bias_dropout_add`] from differentiable candle ops (any device).
pub fn bias_dropout_add_reference(
    h: &Tensor,
    bias: &Tensor,
    residual: &Tensor,
    p: f32,
    seed: u64,
) -> Result<Tensor> {
    dropout_reference(&h.broadcast_add(bias)?, p, seed)? + residual
}

struct BiasDropoutAddOp(DropoutOp);

impl CustomOp3 for BiasDropoutAddOp {
    fn name(&self) -> &'static str {
        "newstag-bias-dropout-add"
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
        let (h, bias, r) = (
            as_f32(s1, l1, name)?,
            as_f32(s2, l2, name)?,
            as_f32(s3, l3, name)?,
        );
        let n = bias.len();
        if r.len() != h.len() || n == 0 || h.len() % n != 0 {
            bail!("{name}: mismatched shapes")
        }
        let mut y = vec![0f32; h.len()];
        let rows_per_chunk = (ELEMWISE_CHUNK / n).max(1);
        par_chunks_mut([(&mut y[..], rows_per_chunk * n)], |c, [y]| {
            let start = c * rows_per_chunk * n;
            let (h, r) = (&h[start..][..y.len()], &r[start..][..y.len()]);
            for (h, y) in h.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
                for ((y, &h), &b) in y.iter_mut().zip(h).zip(bias) {
                    *y = h + b;
                }
            }
            self.0.apply_in_place(start, y);
            for (y, r) in y.iter_mut().zip(r) {
                *y += r;
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        bias: &Tensor,
        _residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = bias.elem_count();
        let rows = h.elem_count() / n;
        let grad = grad.contiguous()?;
        let g = grad.apply_op1_no_bwd(&DropoutBwdSumsOp { drop: self.0, n })?;
        let (gh, sums) = split_rows_and_sums(&g, rows, 1, h.shape())?;
        Ok((Some(gh), Some(sums[0].reshape(bias.shape())?), Some(grad)))
    }
}

/// The gradient through a dropout mask, `[rows, n]`, followed by its column sums (a bias
/// gradient).
struct DropoutBwdSumsOp {
    drop: DropoutOp,
    n: usize,
}

impl CustomOp1 for DropoutBwdSumsOp {
    fn name(&self) -> &'static str {
        "newstag-dropout-bwd-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = as_f32(s, l, self.name())?;
        let n = self.n;
        if n == 0 || g.len() % n != 0 {
            bail!("{}: mismatched shapes", self.name())
        }
        let rows = g.len() / n;
        let out = rows_and_column_sums(rows, n, 1, BLOCK_ROWS, |first, gh, part| {
            let start = first * n;
            self.drop.apply(start, &g[start..][..gh.len()], gh);
            for gh in gh.chunks_exact(n) {
                for (p, v) in part.iter_mut().zip(gh) {
                    *p += v;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_is_accurate_to_5e7() {
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
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 / 10_000.0;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "max relative error {worst}");
        assert_eq!(exp_f32(-1e9), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
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

    #[test]
    fn device_masks_keep_one_minus_p_at_the_right_scale() {
        // The mask GPUs draw, drawn here through the same candle ops on CPU.
        let x = Tensor::zeros((200, 1000), DType::F32, &candle_core::Device::Cpu).unwrap();
        for p in [0.1f32, 0.5] {
            let m = device_mask(&x, p).unwrap();
            assert_eq!(m.dims(), x.dims());
            let m = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = 1.0 / (1.0 - p);
            assert!(m.iter().all(|&v| v == 0.0 || v == scale), "p {p}");
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / m.len() as f64;
            // 200,000 draws: the standard deviation of the rate is at most 0.0012.
            assert!(
                (kept - (1.0 - p as f64)).abs() < 0.006,
                "p {p}: kept {kept}"
            );
        }
        // Inverted dropout keeps the mean: E[mask] = 1.
        let m = device_mask(&x, 0.1).unwrap().mean_all().unwrap();
        assert!((m.to_scalar::<f32>().unwrap() - 1.0).abs() < 0.01);
    }

    #[test]
    fn cpu_dropout_reference_keeps_the_counter_stream() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::ones((37, 53), DType::F32, &dev).unwrap();
        let got = dropout_reference(&x, 0.1, 7).unwrap();
        let want = DropoutOp::new(0.1, 7).mask(37 * 53);
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    }
}
