//! f32 matrix products for inference on CPUs with AVX-512 or AVX2: weights packed once at load
//! into panels of 32 columns, activations read in place, a 12 x 32 register-blocked FMA kernel
//! (on AVX2's sixteen 8-lane registers, four 6 x 16 quarters of the block in turn).
//!
//! Why a kernel of our own when candle's product (the `gemm` crate) is fast: at inference the
//! weights never change, yet `gemm` packs both operands on every call and candle zero-fills each
//! output before `gemm` overwrites it. On the encoder's shapes those passes took a tenth of `tag`'s
//! time in f32 (perf on an Intel Xeon: packing 8%, zeroing 4%). Here the weights are packed once
//! ([`PackedWeight`]), the activations are broadcast straight from their rows, and the output is
//! written once. The layout and loop are [`super::int8`]'s with FMA in place of `vpdpbusd`.
//!
//! Every output is one chain of fused multiply-adds over the inner dimension in order, starting
//! from zero, whatever the number of rows: a row's result does not depend on its batch. The
//! portable kernel computes the same chain with `f32::mul_add`, so the three give the same bits,
//! which the tests check; CPUs without AVX2 keep candle's product instead (`gemm`'s NEON
//! kernels), since the portable kernel is far slower there.

use super::epilogue::{self, After, Epilogue, Product};
use super::host::{DisjointOut, Input, Simd};
use candle_core::{bail, Result, Tensor};
use std::sync::Arc;

/// Columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per kernel call (24 accumulators, two weight registers and a broadcast: 27 of 32).
const MR: usize = 12;
/// The most rows of a weight panel a kernel call reads (32 KiB, so that the slice stays in a
/// 48 KiB L1 cache while the rows of activations pass through it).
const KC: usize = 256;
/// How many panel rows ahead the AVX-512 kernel prefetches (2 KiB): alternated in one process at
/// the encoder's shapes on a 2-core Intel Xeon (model 207), 158-166 GFLOP/s against 145-159
/// without; 8 and 32 rows ahead gave the same within noise.
const PREFETCH: usize = 16;

/// One of the f32 kernels (both give the same bits; see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp32Kernel {
    /// AVX-512F FMA on 512-bit registers (Intel Skylake-SP and later servers, AMD Zen 4 and later).
    Avx512,
    /// AVX2 FMA on 256-bit registers (Intel Haswell and later, AMD Zen 1-3).
    Avx2,
    /// Plain Rust with `f32::mul_add` (every CPU; the tests' reference).
    Portable,
}

impl Fp32Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Fp32Kernel; 3] = [Fp32Kernel::Avx512, Fp32Kernel::Avx2, Fp32Kernel::Portable];

    /// Whether this CPU runs the kernel (the instructions of the [`Simd`] of the same name).
    pub fn runs_here(self) -> bool {
        match self {
            Fp32Kernel::Avx512 => Simd::Avx512.runs_here(),
            Fp32Kernel::Avx2 => Simd::Avx2.runs_here(),
            Fp32Kernel::Portable => true,
        }
    }

    /// The kernel inference uses on this CPU: `None` where it lacks AVX2, which keeps candle's
    /// product.
    pub fn for_inference() -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| *k != Fp32Kernel::Portable && k.runs_here())
    }
}

/// A weight `[k, n]` (rows: inputs, columns: outputs) packed for the kernel.
#[derive(Debug)]
pub struct PackedWeight {
    k: usize,
    n: usize,
    /// Panel `j`, row `p`, column `c` at `(j * k + p) * NR + c`: `w[p, j * NR + c]`; zero beyond
    /// `n`.
    data: Vec<f32>,
}

impl PackedWeight {
    /// Packs `w`, `[k, n]` row-major.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "fp32 PackedWeight::new: a [{k}, {n}] weight"
        );
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for j in 0..panels {
            let cols = NR.min(n - j * NR);
            for p in 0..k {
                data[(j * k + p) * NR..][..cols].copy_from_slice(&w[p * n + j * NR..][..cols]);
            }
        }
        PackedWeight { k, n, data }
    }

    /// Packs a `[k, n]` tensor.
    pub fn from_tensor(w: &Tensor) -> Result<Self> {
        let (k, n) = w.dims2()?;
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::new(&v, k, n))
    }
}

/// `x w` for `x` `[.., k]` with the packed weight `w`: `[.., n]`, on `kernel` (an error where
/// this CPU lacks it), then `after`, in the product's parallel tasks.
pub fn matmul(
    x: &Tensor,
    w: &Arc<PackedWeight>,
    kernel: Fp32Kernel,
    after: After<'_>,
) -> Result<Tensor> {
    epilogue::run(x, Fp32Matmul(Arc::clone(w), kernel), after)
}

struct Fp32Matmul(Arc<PackedWeight>, Fp32Kernel);

impl Product for Fp32Matmul {
    const NAME: &'static str = "newstag-fp32-matmul";

    fn dims(&self) -> (usize, usize) {
        (self.0.k, self.0.n)
    }

    fn forward(&self, x: Input<'_>, rows: usize, then: Epilogue<'_>) -> Result<Vec<f32>> {
        let (w, kernel) = (&self.0, self.1);
        if !kernel.runs_here() {
            bail!("fp32 matmul: this CPU lacks the {kernel:?} kernel's instructions")
        }
        let (k, n) = (w.k, w.n);
        // The last, partial block of rows, padded with zeros so that every block reads MR rows.
        let full = rows / MR;
        let mut tail = vec![0f32; if rows.is_multiple_of(MR) { 0 } else { MR * k }];
        tail[..(rows - full * MR) * k].copy_from_slice(&x.data[full * MR * k..]);
        let slices = k.div_ceil(KC);
        let depth = k.div_ceil(slices);
        let blocks = |out: DisjointOut, rb: usize, j: usize, slice: usize| {
            let (from, to) = (slice * depth, ((slice + 1) * depth).min(k));
            let a = if rb < full {
                &x.data[rb * MR * k..][..MR * k]
            } else {
                &tail
            };
            let block = Block {
                a: &a[from..],
                lda: k,
                rows: MR.min(rows - rb * MR),
                panel: &w.data[(j * k + from) * NR..][..(to - from) * NR],
                cols: NR.min(n - j * NR),
                depth: to - from,
                accumulate: slice > 0,
            };
            // SAFETY: this call alone writes rows `rb * MR..` (`block.rows` of them) and columns
            // `j * NR..` (`block.cols`) of `y`, which has rows of `n`, and the slices of a block
            // come in order on one thread, so `accumulate` reads what the slice before stored.
            let y = unsafe { out.at(rb * MR * n + j * NR) };
            match kernel {
                // SAFETY: the CPU has AVX-512F (`runs_here`, checked above). The last block
                // computes only as many rows of four as it stores: a window of 19 tokens, alone in
                // its batch, is 12 + 8 rows of work instead of 24.
                #[cfg(target_arch = "x86_64")]
                Fp32Kernel::Avx512 => unsafe {
                    match block.rows {
                        ..=4 => avx512::block::<4>(&block, y, n),
                        5..=8 => avx512::block::<8>(&block, y, n),
                        _ => avx512::block::<MR>(&block, y, n),
                    }
                },
                // SAFETY: the CPU has AVX2 and FMA (`runs_here`, checked above).
                #[cfg(target_arch = "x86_64")]
                Fp32Kernel::Avx2 => unsafe { avx2::block(&block, y, n) },
                // SAFETY: `y` as above.
                _ => unsafe { portable_block(&block, y, n) },
            }
        };
        // SAFETY: every kernel stores all `block.rows` x `block.cols` of its block, and only those.
        Ok(unsafe { then.par_blocks((rows, k, n), (MR, NR), slices, blocks) })
    }
}

/// One block of the product: [`MR`] rows of activations times a slice of a weight panel.
struct Block<'a> {
    /// [`MR`] rows of `depth` at a stride of `lda` (beyond `rows`, padding).
    a: &'a [f32],
    lda: usize,
    /// The rows to store.
    rows: usize,
    /// `depth * NR` packed weights.
    panel: &'a [f32],
    /// The columns to store.
    cols: usize,
    depth: usize,
    /// Whether the sums go on from what the block holds (the slices before this one) rather
    /// than from zero.
    accumulate: bool,
}

/// The portable kernel.
///
/// # Safety
/// `y` points at row 0, column 0 of the block in a matrix with rows of `ldy`, and the block's
/// `rows x cols` elements are this call's alone to write.
unsafe fn portable_block(b: &Block<'_>, y: *mut f32, ldy: usize) {
    for r in 0..b.rows {
        let a = &b.a[r * b.lda..][..b.depth];
        let mut acc = [0f32; NR];
        if b.accumulate {
            // SAFETY: as below; the slice before stored these.
            unsafe { std::ptr::copy_nonoverlapping(y.add(r * ldy), acc.as_mut_ptr(), b.cols) };
        }
        for (&a, w) in a.iter().zip(b.panel.chunks_exact(NR)) {
            for (acc, &w) in acc.iter_mut().zip(w) {
                *acc = a.mul_add(w, *acc);
            }
        }
        // SAFETY: row `r < rows`, columns `..cols` (the caller's promise).
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), y.add(r * ldy), b.cols) };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Block, MR, NR, PREFETCH};
    use std::arch::x86_64::*;

    /// The first `M` rows (at most [`MR`], at least `b.rows`) at once, two 16-lane accumulators
    /// each.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `y` as for [`super::portable_block`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block<const M: usize>(b: &Block<'_>, y: *mut f32, ldy: usize) {
        debug_assert!(b.rows <= M && M <= MR);
        let half = |c: usize| if c >= 16 { 0xffff } else { (1u16 << c) - 1 };
        let masks = [half(b.cols), half(b.cols.saturating_sub(16))];
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        if b.accumulate {
            for (r, acc) in acc.iter_mut().enumerate().take(b.rows) {
                for (h, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: as for the stores below; the slice before stored these.
                    *acc = unsafe { _mm512_maskz_loadu_ps(masks[h], y.add(r * ldy + 16 * h)) };
                }
            }
        }
        let (a, panel, lda) = (b.a.as_ptr(), b.panel.as_ptr(), b.lda);
        // Each row from a pointer of its own that the compiler cannot relate to the others, so
        // that a broadcast is one base-plus-index load. Derived from `a` and `lda`, the addresses
        // became a chain of sums per row that took ALU ports from the FMAs: 161-177 GFLOP/s on one
        // thread of a Xeon with AMX (model 167) at the encoder's shapes, 151-167 before.
        let row: [*const f32; M] =
            std::hint::black_box(std::array::from_fn(|r| a.wrapping_add(r * lda)));
        for p in 0..b.depth {
            // SAFETY: `panel` holds `depth * NR` weights and `a` `MR` rows of `depth` at `lda`.
            unsafe {
                let w0 = _mm512_loadu_ps(panel.add(p * NR));
                let w1 = _mm512_loadu_ps(panel.add(p * NR + 16));
                // The panel rows PREFETCH ahead (past the slice, the next slice's; a prefetch
                // never faults): the first row block to read a slice waits less on L2.
                let ahead = panel.wrapping_add((p + PREFETCH) * NR).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*row[r].add(p));
                    acc[0] = _mm512_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(x, w1, acc[1]);
                }
            }
        }
        let store = |r: usize, acc: [__m512; 2]| {
            for (h, acc) in acc.into_iter().enumerate() {
                // SAFETY: the masked columns of row `r < rows` lie in the block (the caller's
                // promise).
                unsafe { _mm512_mask_storeu_ps(y.add(r * ldy + 16 * h), masks[h], acc) };
            }
        };
        // Row by row with constant indices, so the accumulators stay in registers (as int8's).
        macro_rules! store_rows {
            ($($r:literal)*) => { $( if $r < M && $r < b.rows { store($r, acc[$r]); } )* };
        }
        const _: () = assert!(MR == 12, "store_rows! lists the MR rows");
        store_rows!(0 1 2 3 4 5 6 7 8 9 10 11);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, NR};
    use std::arch::x86_64::*;

    /// Rows per quarter of a block (twelve accumulators, two weight registers and a broadcast: 15
    /// of 16).
    const ROWS: usize = 6;

    /// The block as up to four quarters of 6 rows x 16 columns, each over the whole slice (the
    /// panel's slice stays in L1 between them).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `y` as for [`super::portable_block`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(b: &Block<'_>, y: *mut f32, ldy: usize) {
        for r0 in (0..b.rows).step_by(ROWS) {
            for c0 in (0..b.cols).step_by(16) {
                let rows = ROWS.min(b.rows - r0);
                // SAFETY: rows `r0..r0 + ROWS` exist in `b.a` (padding at worst), columns
                // `c0..c0 + 16` in the panel; what is stored lies in the block.
                unsafe {
                    if rows <= 3 {
                        quarter::<3>(b, r0, c0, y, ldy)
                    } else {
                        quarter::<ROWS>(b, r0, c0, y, ldy)
                    }
                }
            }
        }
    }

    /// Rows `r0..r0 + M` (those below `b.rows` stored) and columns `c0..c0 + 16` (those below
    /// `b.cols`).
    ///
    /// # Safety
    /// As for [`block`], with `r0 + M <=` the rows of `b.a` and `c0 + 16 <= NR`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quarter<const M: usize>(
        b: &Block<'_>,
        r0: usize,
        c0: usize,
        y: *mut f32,
        ldy: usize,
    ) {
        let (rows, cols) = ((b.rows - r0).min(M), (b.cols - c0).min(16));
        let y = y.wrapping_add(r0 * ldy + c0);
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        if b.accumulate {
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                // SAFETY: the slice before stored these (row `r0 + r`, `cols` columns).
                unsafe {
                    let from = if cols == 16 {
                        y.add(r * ldy).cast_const()
                    } else {
                        let mut sums = [0f32; 16];
                        std::ptr::copy_nonoverlapping(y.add(r * ldy), sums.as_mut_ptr(), cols);
                        *acc = [0, 8].map(|h| _mm256_loadu_ps(sums.as_ptr().add(h)));
                        continue;
                    };
                    *acc = [0, 8].map(|h| _mm256_loadu_ps(from.add(h)));
                }
            }
        }
        let a = b.a.as_ptr().wrapping_add(r0 * b.lda);
        let panel = b.panel.as_ptr().wrapping_add(c0);
        // Each row from a pointer of its own, as in the AVX-512 kernel.
        let row: [*const f32; M] =
            std::hint::black_box(std::array::from_fn(|r| a.wrapping_add(r * b.lda)));
        for p in 0..b.depth {
            // SAFETY: `panel` holds `depth * NR` weights from `c0`, `a` `M` rows of `depth`.
            unsafe {
                let w0 = _mm256_loadu_ps(panel.add(p * NR));
                let w1 = _mm256_loadu_ps(panel.add(p * NR + 8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*row[r].add(p));
                    acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
                }
            }
        }
        let store = |r: usize, acc: [__m256; 2]| {
            // SAFETY: row `r < rows`, columns `..cols` of the quarter lie in the block.
            unsafe {
                if cols == 16 {
                    _mm256_storeu_ps(y.add(r * ldy), acc[0]);
                    _mm256_storeu_ps(y.add(r * ldy + 8), acc[1]);
                } else {
                    let mut sums = [0f32; 16];
                    _mm256_storeu_ps(sums.as_mut_ptr(), acc[0]);
                    _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc[1]);
                    std::ptr::copy_nonoverlapping(sums.as_ptr(), y.add(r * ldy), cols);
                }
            }
        };
        // Row by row with constant indices, so the accumulators stay in registers.
        macro_rules! store_rows {
            ($($r:literal)*) => { $( if $r < M && $r < rows { store($r, acc[$r]); } )* };
        }
        const _: () = assert!(ROWS == 6, "store_rows! lists the ROWS rows");
        store_rows!(0 1 2 3 4 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::host::AWKWARD_SHAPES;
    use candle_core::Device;

    fn product(x: &[f32], rows: usize, w: &Arc<PackedWeight>, kernel: Fp32Kernel) -> Vec<f32> {
        let xt = Tensor::from_vec(x.to_vec(), (rows, w.k), &Device::Cpu).unwrap();
        let y = matmul(&xt, w, kernel, After::Nothing).unwrap();
        assert_eq!(y.dims(), [rows, w.n]);
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn inputs(rows: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..rows * k)
            .map(|i| (i as f32 * 0.11).cos() + 0.3)
            .collect();
        let w = (0..k * n).map(|i| (i as f32 * 0.07).sin() * 0.2).collect();
        (x, w)
    }

    #[test]
    fn the_portable_kernel_is_one_fused_chain_per_output() {
        let (rows, k, n) = (13, 9, 35);
        let (x, w) = inputs(rows, k, n);
        let packed = Arc::new(PackedWeight::new(&w, k, n));
        let got = product(&x, rows, &packed, Fp32Kernel::Portable);
        for r in 0..rows {
            for c in 0..n {
                let want = (0..k).fold(0f32, |acc, i| x[r * k + i].mul_add(w[i * n + c], acc));
                assert_eq!(got[r * n + c], want, "row {r}, column {c}");
            }
        }
    }

    #[test]
    fn the_fast_kernels_give_the_portable_bits_at_awkward_shapes() {
        for kernel in Fp32Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
            for (rows, k, n) in AWKWARD_SHAPES {
                let (x, w) = inputs(rows, k, n);
                let packed = Arc::new(PackedWeight::new(&w, k, n));
                assert_eq!(
                    product(&x, rows, &packed, kernel),
                    product(&x, rows, &packed, Fp32Kernel::Portable),
                    "{kernel:?} {rows}x{k}x{n}"
                );
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_as_in_any_batch() {
        let (rows, k, n) = (30, 48, 40);
        let (x, w) = inputs(rows, k, n);
        let packed = Arc::new(PackedWeight::new(&w, k, n));
        let kernel = Fp32Kernel::for_inference().unwrap_or(Fp32Kernel::Portable);
        let all = product(&x, rows, &packed, kernel);
        for r in [0, 11, 12, 29] {
            let alone = product(&x[r * k..][..k], 1, &packed, kernel);
            assert_eq!(alone, all[r * n..][..n], "row {r}");
        }
    }

    #[test]
    fn dispatch_follows_the_cpu_and_a_mismatch_is_an_error() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let expected = if has!("avx512f") {
                Some(Fp32Kernel::Avx512)
            } else if has!("avx2") && has!("fma") {
                Some(Fp32Kernel::Avx2)
            } else {
                None
            };
            assert_eq!(Fp32Kernel::for_inference(), expected);
        }
        assert!(Fp32Kernel::Portable.runs_here());
        let packed = Arc::new(PackedWeight::new(&[0.5; 6], 2, 3));
        let x = Tensor::zeros((4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matmul(&x, &packed, Fp32Kernel::Portable, After::Nothing).is_err());
        let x = Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        for kernel in Fp32Kernel::ALL {
            assert_eq!(
                matmul(&x, &packed, kernel, After::Nothing).is_ok(),
                kernel.runs_here()
            );
        }
    }
}
