//! What every host kernel repeats: its inputs unpacked from candle's storage (contiguous `f32`,
//! with the error said in one place), the custom-op plumbing ([`HostKernel`] and its wrapper
//! [`Host`], one implementation per arity instead of one per op), and the row-parallel loops on
//! rayon's pool, the one candle's matrix multiply runs on (with candle's own pool as well, its
//! threads spin after each kernel while the multiply's threads want the cores).

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::ops::Range;

/// Below this many elements touched, a kernel runs on the calling thread.
const PAR_MIN: usize = 1 << 15;

/// Rows per block of the partial column sums of the backward passes (bias and LayerNorm
/// gradients; fixed, so the summation order does not depend on the number of threads).
pub(crate) const BLOCK_ROWS: usize = 16;

/// Elements per parallel chunk of the elementwise kernels (a multiple of 4, see
/// [`super::dropout()`]).
pub(crate) const ELEMWISE_CHUNK: usize = 1 << 14;

/// Whether the fused kernels run on `x` (`f32` on CPU) rather than their fallbacks.
pub fn runs_fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

// ---------------------------------------------------------------------------------------------
// Inputs and the custom-op plumbing.

/// The `f32` elements of a contiguous CPU tensor.
fn as_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: expected an f32 tensor")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: expected a contiguous tensor"),
    }
}

/// One input of a host kernel: its contiguous `f32` elements and its layout.
#[derive(Clone, Copy)]
pub(crate) struct Input<'a> {
    pub(crate) data: &'a [f32],
    layout: &'a Layout,
    op: &'static str,
}

impl Input<'_> {
    pub(crate) fn dims(&self) -> &[usize] {
        self.layout.dims()
    }

    pub(crate) fn shape(&self) -> Shape {
        self.layout.shape().clone()
    }

    /// The length of the rows (the last dimension, which must not be empty).
    pub(crate) fn last_dim(&self) -> Result<usize> {
        match self.dims().last() {
            Some(&d) if d > 0 => Ok(d),
            _ => bail!(
                "{}: expected a tensor with a non-empty last dimension",
                self.op
            ),
        }
    }
}

/// A kernel on the host: `N` contiguous `f32` CPU tensors in, one `f32` tensor out, with its
/// backward pass (where it has one) made of tensor ops, usually other host kernels. [`Host`]
/// makes a candle custom op of it.
pub(crate) trait HostKernel<const N: usize>: Send + Sync {
    /// The op's name, in its errors (`newstag-layer-norm`).
    const NAME: &'static str;

    /// The output's elements and shape.
    fn forward(&self, inputs: [Input<'_>; N]) -> Result<(Vec<f32>, Shape)>;

    /// The gradients of the `inputs` from the output `res` and its gradient `grad`.
    fn backward(
        &self,
        inputs: [&Tensor; N],
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<[Option<Tensor>; N]> {
        let _ = (inputs, res, grad);
        Err(candle_core::Error::BackwardNotSupported { op: Self::NAME })
    }
}

/// A [`HostKernel`] as a candle custom op (`CustomOp1`, `CustomOp2` or `CustomOp3` by its
/// number of inputs).
pub(crate) struct Host<K>(pub(crate) K);

impl<K> Host<K> {
    fn run<const N: usize>(&self, args: [(&CpuStorage, &Layout); N]) -> Result<(CpuStorage, Shape)>
    where
        K: HostKernel<N>,
    {
        let mut data: [&[f32]; N] = [&[]; N];
        for (d, (s, l)) in data.iter_mut().zip(args) {
            *d = as_f32(s, l, K::NAME)?;
        }
        let inputs = std::array::from_fn(|i| Input {
            data: data[i],
            layout: args[i].1,
            op: K::NAME,
        });
        let (y, shape) = self.0.forward(inputs)?;
        Ok((CpuStorage::F32(y), shape))
    }
}

impl<K: HostKernel<1>> CustomOp1 for Host<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run([(s, l)])
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [g] = self.0.backward([x], res, grad)?;
        Ok(g)
    }
}

impl<K: HostKernel<2>> CustomOp2 for Host<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.run([(s1, l1), (s2, l2)])
    }

    fn bwd(
        &self,
        x1: &Tensor,
        x2: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [g1, g2] = self.0.backward([x1, x2], res, grad)?;
        Ok((g1, g2))
    }
}

impl<K: HostKernel<3>> CustomOp3 for Host<K> {
    fn name(&self) -> &'static str {
        K::NAME
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
        self.run([(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x1: &Tensor,
        x2: &Tensor,
        x3: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [g1, g2, g3] = self.0.backward([x1, x2, x3], res, grad)?;
        Ok((g1, g2, g3))
    }
}

// ---------------------------------------------------------------------------------------------
// Shape checks.

/// `{op}: mismatched shapes` unless `ok`.
pub(crate) fn check_shapes(ok: bool, op: &str) -> Result<()> {
    if !ok {
        bail!("{op}: mismatched shapes")
    }
    Ok(())
}

/// The number of rows of `n` in `len` elements (`n` above zero and dividing `len`).
pub(crate) fn rows_of(len: usize, n: usize, op: &str) -> Result<usize> {
    check_shapes(n > 0 && len.is_multiple_of(n), op)?;
    Ok(len / n)
}

/// The rows of a matrix product's input `x` (`[.., k]`) with a `[k, n]` weight and the shape of
/// its result (`[.., n]`), or an error naming `op` and both shapes.
pub(crate) fn product_shape(op: &str, x: &Input<'_>, k: usize, n: usize) -> Result<(usize, Shape)> {
    let dims = x.dims();
    if dims.last() != Some(&k) || k == 0 {
        bail!("{op}: input {dims:?} for a [{k}, {n}] weight")
    }
    let mut out = dims.to_vec();
    *out.last_mut().expect("a last dimension") = n;
    Ok((x.data.len() / k, Shape::from(out)))
}

/// The row length of `h`, which `bias` must match.
pub(crate) fn check_bias(h: &Tensor, bias: &Tensor) -> Result<usize> {
    let n = h.dim(candle_core::D::Minus1)?;
    if bias.dims() != [n] {
        bail!("bias of shape {:?} for rows of {n}", bias.dims())
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Instruction sets.

/// The instructions a kernel's own loops are compiled for. The crate is built for baseline
/// x86-64, where LLVM vectorises those loops on SSE2's four lanes; [`Simd::run`] compiles a
/// closure's body again for AVX2's eight lanes and for AVX-512's sixteen, chosen at run time. The
/// loops' arithmetic is the same IEEE operations in the same order either way (the sums keep fixed
/// lanes, Rust never contracts into FMA, `mul_add` is fused in each), so all give the same bits,
/// which the tests check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F (Intel Skylake-SP and later servers, AMD Zen 4 and later).
    Avx512,
    /// AVX2 with FMA (Intel Haswell and later, AMD Zen 1-3).
    Avx2,
    /// The baseline build (every CPU).
    Portable,
}

impl Simd {
    /// Every instruction set, widest first.
    pub const ALL: [Simd; 3] = [Simd::Avx512, Simd::Avx2, Simd::Portable];

    /// The widest this CPU runs.
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .find(|s| s.runs_here())
            .unwrap_or(Simd::Portable)
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Simd::Avx512 => has!("avx512f"),
                Simd::Avx2 => has!("avx2") && has!("fma"),
                Simd::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Simd::Portable
        }
    }

    /// Runs `body`, compiled for these instructions (its `call` must be `#[inline(always)]`,
    /// which a closure cannot be: a closure would stay a separate, baseline function). Falls
    /// back to the portable code where the CPU lacks them.
    #[inline(always)]
    pub(crate) fn run<B: SimdBody>(self, body: B) -> B::Out {
        #[cfg(target_arch = "x86_64")]
        if self != Simd::Portable && self.runs_here() {
            // SAFETY: the CPU has the instructions (checked just above).
            return unsafe {
                match self {
                    Simd::Avx512 => run_avx512(body),
                    _ => run_avx2(body),
                }
            };
        }
        body.call()
    }
}

/// A piece of a kernel's work that [`Simd::run`] compiles once per instruction set.
pub(crate) trait SimdBody {
    type Out;
    /// The work; implementations are `#[inline(always)]`, so it compiles into each caller.
    fn call(self) -> Self::Out;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<B: SimdBody>(body: B) -> B::Out {
    body.call()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<B: SimdBody>(body: B) -> B::Out {
    body.call()
}

// ---------------------------------------------------------------------------------------------
// Parallel loops.

/// Runs `f(i)` for `i` in `0..n`, in parallel when `work` elements are touched in all (each `i`
/// exactly once).
pub(crate) fn par_for(n: usize, work: usize, f: impl Fn(usize) + Sync) {
    if n > 1 && work >= PAR_MIN {
        (0..n).into_par_iter().for_each(&f);
    } else {
        (0..n).for_each(f);
    }
}

/// `(rows, k, n)` of matrix products that test a blocked kernel's edges: one element, odd and
/// prime sizes, partial row blocks (of every remainder class a kernel's last block may take, with
/// an inner dimension of several slices) and panels, a whole panel.
#[cfg(test)]
pub(crate) const AWKWARD_SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (7, 300, 40),
    (13, 7, 37),
    (19, 40, 33),
    (23, 17, 64),
    (25, 64, 32),
    (12, 384, 96),
    (40, 33, 70),
];

/// The most row blocks one task of [`par_blocks`] takes.
const TASK_ROW_BLOCKS: usize = 32;

/// Runs `block(row_block, panel, slice)` once for every block of `block_rows` rows, panel of
/// `panel_cols` columns and slice of the inner dimension (`slices` of them, in order for each
/// block) of a `[rows, inner] x [inner, cols]` matrix product, in parallel unless it is tiny:
/// tasks of several row blocks and panels each, enough for every thread, each task reusing a
/// slice of its weight panels over its row blocks while it is in cache.
///
/// Each thread reads the activation rows and the weight panels of its tasks, so the larger of the
/// two is what the threads split: rows when there are at least as many rows as columns, else
/// panels (a batch of one window at 40 rows x 384 columns and `k` 1,536 ran at 130 GFLOP/s with
/// every thread reading every panel, and at 230 with half each).
pub(crate) fn par_blocks(
    shape: (usize, usize, usize),
    blocks: (usize, usize),
    slices: usize,
    block: impl Fn(usize, usize, usize) + Sync,
) {
    par_blocks_then(shape, blocks, slices, block, |_, _| {});
}

/// [`par_blocks`], each task then calling `done(rows, columns)` with the part of the result its
/// blocks made, while that part is still in cache.
pub(crate) fn par_blocks_then(
    (rows, inner, cols): (usize, usize, usize),
    (block_rows, panel_cols): (usize, usize),
    slices: usize,
    block: impl Fn(usize, usize, usize) + Sync,
    done: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let (row_blocks, panels) = (rows.div_ceil(block_rows), cols.div_ceil(panel_cols));
    let threads = rayon::current_num_threads().max(1);
    let split_rows = rows >= cols;
    // A multiple of the threads of tasks, each an even share: rayon hands each thread half of
    // the tasks left and the other rarely steals, so 50 row blocks in 7 tasks of 8 and one of 2,
    // as they were cut before, kept one of 2 threads idle for up to a fifth of a product. Up to
    // 32 row blocks a task (the fewer, the fewer times each thread reads the weights): 2 threads
    // of the AMX Xeon (model 167) at 300 and 600 rows, 299-348 GFLOP/s against 272-309.
    let (row_tasks, panel_tasks) = if split_rows {
        let row_tasks =
            (threads * row_blocks.div_ceil(threads * TASK_ROW_BLOCKS)).clamp(1, row_blocks.max(1));
        (row_tasks, threads.div_ceil(row_tasks))
    } else {
        // Two panel tasks per thread where all rows are one task, else one.
        let row_tasks = row_blocks.div_ceil(TASK_ROW_BLOCKS).max(1);
        (row_tasks, threads * if row_tasks == 1 { 2 } else { 1 })
    };
    let panel_tasks = panel_tasks.clamp(1, panels.max(1));
    let share = |t: usize, tasks: usize, n: usize| t * n / tasks..(t + 1) * n / tasks;
    // Consecutive tasks, which rayon tends to give one thread, share what is not split.
    let task = |t: usize| {
        if split_rows {
            (t / panel_tasks, t % panel_tasks)
        } else {
            (t % row_tasks, t / row_tasks)
        }
    };
    // What the product touches: both operands and the result (counting the result alone, a
    // 40 x 1,536 x 384 product ran on one thread).
    let work = rows * inner + inner * cols + rows * cols;
    par_for(row_tasks * panel_tasks, work, |t| {
        let (rt, pt) = task(t);
        let (row_blocks, panels) = (
            share(rt, row_tasks, row_blocks),
            share(pt, panel_tasks, panels),
        );
        for s in 0..slices {
            for j in panels.clone() {
                for rb in row_blocks.clone() {
                    block(rb, j, s);
                }
            }
        }
        let within =
            |r: Range<usize>, size: usize, end: usize| r.start * size..(r.end * size).min(end);
        done(
            within(row_blocks, block_rows, rows),
            within(panels, panel_cols, cols),
        );
    });
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

    /// Writes into the spare capacity of `buffer` (empty, with room for the result): for a
    /// result whose every element the tasks write, which a zeroed buffer would write twice
    /// (the int8 products: 4% of int8 inference went to zeroing their outputs first). Only
    /// after every element is written may the caller `set_len`.
    pub(crate) fn spare(buffer: &mut Vec<f32>) -> Self {
        DisjointOut(buffer.spare_capacity_mut().as_mut_ptr().cast())
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

/// Calls `f(i, [chunk i of each output])` for every chunk index, in parallel when the outputs
/// are large: rayon's `par_chunks_mut`, for several outputs at once. Each output is cut into
/// chunks of its own length; all must have the same number of chunks.
pub(crate) fn par_chunks_mut<const N: usize>(
    outs: [(&mut [f32], usize); N],
    f: impl Fn(usize, [&mut [f32]; N]) + Sync,
) {
    let work: usize = outs.iter().map(|(s, _)| s.len()).sum();
    let mut chunks = outs.map(|(s, c)| s.chunks_mut(c.max(1)));
    let n = chunks.first().map_or(0, ExactSizeIterator::len);
    assert!(
        chunks.iter().all(|c| c.len() == n),
        "par_chunks_mut: outputs with different chunk counts"
    );
    let tasks = (0..n).map(|_| chunks.each_mut().map(|c| c.next().expect("n chunks")));
    if n > 1 && work >= PAR_MIN {
        let tasks: Vec<_> = tasks.collect();
        tasks
            .into_par_iter()
            .enumerate()
            .for_each(|(i, parts)| f(i, parts));
    } else {
        tasks.enumerate().for_each(|(i, parts)| f(i, parts));
    }
}

/// Rows per parallel chunk when each row costs `work_per_row` elements.
pub(crate) fn rows_per_chunk(work_per_row: usize) -> usize {
    (ELEMWISE_CHUNK / work_per_row.max(1)).max(1)
}

/// The row-parallel loop: `out` holds rows of `n`; calls `f(first_row, chunk)` on chunks of
/// `rows` whole rows, in parallel.
pub(crate) fn par_rows(
    out: &mut [f32],
    n: usize,
    rows: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    par_chunks_mut([(out, rows * n)], |c, [out]| f(c * rows, out));
}

/// Rows `first..` of `x` (rows of `n`), as many elements as `like` has.
#[inline(always)]
pub(crate) fn rows_from<'a>(x: &'a [f32], first: usize, n: usize, like: &[f32]) -> &'a [f32] {
    &x[first * n..][..like.len()]
}

/// A fresh `[rows, d]` result whose row `i` is `row(i, [row i of each input], out)`, in parallel
/// chunks of whole rows; every input has rows of `d`, the first sets the row count.
/// The rows are baseline code (a closure); [`map_rows_on`] compiles them for wider SIMD too.
pub(crate) fn map_rows<const N: usize>(
    inputs: [&[f32]; N],
    d: usize,
    row: impl Fn(usize, [&[f32]; N], &mut [f32]) + Sync,
) -> Vec<f32> {
    map_rows_on(Simd::Portable, inputs, d, &ClosureRows(row))
}

/// A closure as [`Rows`].
struct ClosureRows<F>(F);

impl<const N: usize, F: Fn(usize, [&[f32]; N], &mut [f32]) + Sync> Rows<N> for ClosureRows<F> {
    #[inline(always)]
    fn row(&self, i: usize, inputs: [&[f32]; N], out: &mut [f32]) {
        (self.0)(i, inputs, out)
    }
}

/// A row function that [`map_rows_on`] compiles once per instruction set (a closure would stay
/// baseline code; see [`Simd::run`]).
pub(crate) trait Rows<const N: usize>: Sync {
    /// Row `i` of the result from row `i` of each input. Implementations are
    /// `#[inline(always)]`.
    fn row(&self, i: usize, inputs: [&[f32]; N], out: &mut [f32]);
}

/// [`map_rows`] with the rows computed by `rows` on the instructions `simd`.
pub(crate) fn map_rows_on<const N: usize, R: Rows<N>>(
    simd: Simd,
    inputs: [&[f32]; N],
    d: usize,
    rows: &R,
) -> Vec<f32> {
    let mut y = vec![0f32; inputs.first().map_or(0, |x| x.len())];
    par_rows(&mut y, d, rows_per_chunk(d), |first, y| {
        simd.run(RowChunk {
            rows,
            inputs,
            d,
            first,
            y,
        })
    });
    y
}

/// Rows `first..` of a [`map_rows_on`] result.
struct RowChunk<'a, 'y, const N: usize, R> {
    rows: &'a R,
    inputs: [&'a [f32]; N],
    d: usize,
    first: usize,
    y: &'y mut [f32],
}

impl<const N: usize, R: Rows<N>> SimdBody for RowChunk<'_, '_, N, R> {
    type Out = ();

    #[inline(always)]
    fn call(self) {
        let d = self.d;
        for (r, y) in self.y.chunks_exact_mut(d).enumerate() {
            let at = (self.first + r) * d;
            self.rows
                .row(self.first + r, self.inputs.map(|x| &x[at..at + d]), y);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Backward passes with column sums (bias and LayerNorm parameter gradients).

/// Runs `f(first_row, rows, sums)` over blocks of [`BLOCK_ROWS`] rows of an `[rows, n]` result,
/// where `sums` holds `k` column-sum vectors of length `n` for the block; returns `[rows + k, n]`:
/// the rows, then the `k` column sums over all rows (summed block by block, in order).
pub(crate) fn rows_and_column_sums(
    rows: usize,
    n: usize,
    k: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let mut out = vec![0f32; (rows + k) * n];
    let (body, total) = out.split_at_mut(rows * n);
    let mut partial = vec![0f32; blocks * k * n];
    if blocks > 0 {
        par_chunks_mut(
            [(body, BLOCK_ROWS * n), (&mut partial[..], k * n)],
            |b, [rows, sums]| f(b * BLOCK_ROWS, rows, sums),
        );
    }
    for p in partial.chunks_exact(k * n) {
        for (acc, v) in total.iter_mut().zip(p) {
            *acc += v;
        }
    }
    out
}

/// Adds each row of `rows` (rows of `sums.len()`) into `sums`.
#[inline(always)]
pub(crate) fn add_rows(rows: &[f32], sums: &mut [f32]) {
    for row in rows.chunks_exact(sums.len()) {
        for (p, v) in sums.iter_mut().zip(row) {
            *p += v;
        }
    }
}

/// Splits `[rows + k, n]` from [`rows_and_column_sums`] into the rows (reshaped to `shape`) and
/// the `k` sums.
pub(crate) fn split_rows_and_sums(
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

/// The gradients of `(h, bias)` from `[rows + 1, n]` of a bias kernel's backward pass: the rows
/// (shaped as `h`), then the bias's (the column sums).
pub(crate) fn split_bias_grads(g: &Tensor, h: &Tensor, bias: &Tensor) -> Result<(Tensor, Tensor)> {
    let rows = h.elem_count() / bias.elem_count();
    let (gh, sums) = split_rows_and_sums(g, rows, 1, h.shape())?;
    Ok((gh, sums[0].reshape(bias.shape())?))
}

#[cfg(test)]
mod tests {
    use super::par_blocks;
    use std::sync::Mutex;

    #[test]
    fn par_blocks_runs_every_block_once_with_its_slices_in_order() {
        // (rows, inner, cols) with 12-row blocks and 32-column panels: rows split and panels
        // split, one block, more row blocks than a task takes, fewer blocks than threads.
        let shapes: [(usize, usize, usize); 5] = [
            (600, 384, 384),
            (300, 384, 1152),
            (12, 8, 32),
            (5000, 64, 64),
            (40, 1536, 384),
        ];
        for threads in [1, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for (rows, inner, cols) in shapes {
                let (row_blocks, panels, slices) = (rows.div_ceil(12), cols.div_ceil(32), 3);
                let seen = Mutex::new(vec![0usize; row_blocks * panels]);
                pool.install(|| {
                    par_blocks((rows, inner, cols), (12, 32), slices, |rb, j, s| {
                        let mut seen = seen.lock().unwrap();
                        assert_eq!(seen[rb * panels + j], s, "block ({rb}, {j}): slice {s}");
                        seen[rb * panels + j] += 1;
                    })
                });
                let seen = seen.into_inner().unwrap();
                assert!(
                    seen.iter().all(|&n| n == slices),
                    "{rows}x{inner}x{cols} on {threads} threads"
                );
            }
        }
    }
}
