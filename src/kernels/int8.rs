//! int8 matrix products for inference: weights quantised to `i8` per output column (symmetric)
//! once at load, activations to `u8` per row (asymmetric, with a zero point) at run time, products
//! summed exactly in `i32` and turned back into `f32` after. On CPUs with VNNI that is four
//! multiply-adds per 32-bit lane and instruction (`vpdpbusd`: `u8 x i8`, summed in fours into
//! `i32`), four times f32 FMA.
//!
//! Why a kernel of our own: `rten-gemm` (rten's GEMM) has a `u8 x i8` product with VNNI, but it
//! works on rten's tensor types with zero points only, packs both sides per call, and returns the
//! raw `i32`s: the per-row and per-column scales would take another pass, and the weights would be
//! repacked on every product. What this needs is small: weights packed once into panels of 32
//! columns with groups of four consecutive rows interleaved (the layout `vpdpbusd` reads), a
//! 12 x 32 register-blocked kernel with the dequantisation in its epilogue, as [`super::bf16`].
//!
//! Five kernels compute the same integers: AMX-INT8 (`tdpbusd` on tile registers, Sapphire
//! Rapids and later), AVX512-VNNI (`vpdpbusd` on 512 bits), AVX-VNNI (the 256-bit VEX form on
//! CPUs without AVX-512 such as Alder Lake), AVX2 (`vpmaddwd` on bytes widened to 16 bits, for
//! CPUs without VNNI such as AMD Zen 3) and a portable one in plain Rust that every machine runs
//! and the tests compare the others with, bit for bit. The
//! dequantisation is the same sequence of `f32` operations in all three (an exact `i32`
//! correction for the zero point, one conversion, one product with the row's and column's scales
//! multiplied first), and a row's quantisation depends on that row alone, so a row's result does
//! not depend on the kernel, the thread count or its batch.

use super::epilogue::{self, After, Epilogue, Product};
use super::host::{DisjointOut, Input};
use candle_core::{bail, Result, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per block of the VNNI and portable kernels.
const MR: usize = 12;
/// Activation elements below which a product quantises its rows on the calling thread.
const PAR_QUANTISE_MIN: usize = 1 << 16;

/// One of the int8 kernels (all give the same bits; see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// `tdpbusd` on tile registers (Intel Sapphire Rapids and later).
    Amx,
    /// `vpdpbusd` on 512-bit registers (Intel Ice Lake, Sapphire Rapids and later; AMD Zen 4).
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers, VEX encoded (Intel Alder Lake and later without AVX-512).
    AvxVnni,
    /// `vpmaddwd` on 256-bit registers, the activations and weights widened to 16 bits (Intel
    /// Haswell and later, AMD Zen 1-3). Not `vpmaddubsw`, which multiplies bytes at twice the
    /// rate but saturates its 16-bit pair sums (255 x 127 x 2 > 32,767), so that its results
    /// would depend on the CPU.
    Avx2,
    /// Plain Rust (every CPU).
    Portable,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 5] = [
        Int8Kernel::Amx,
        Int8Kernel::Avx512Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
        Int8Kernel::Portable,
    ];

    /// Whether this CPU runs the kernel.
    pub fn runs_here(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Int8Kernel::Amx => amx::usable(),
                Int8Kernel::Avx512Vnni => has!("avx512f") && has!("avx512vnni"),
                Int8Kernel::AvxVnni => has!("avx2") && has!("avxvnni"),
                Int8Kernel::Avx2 => super::host::Simd::Avx2.runs_here(),
                Int8Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Int8Kernel::Portable
        }
    }

    /// The fastest kernel this CPU runs.
    pub fn best() -> Self {
        Self::ALL
            .into_iter()
            .find(|k| k.runs_here())
            .unwrap_or(Int8Kernel::Portable)
    }

    /// The instruction set, as CPU documentation names it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "AMX-INT8",
            Int8Kernel::Avx512Vnni => "AVX512-VNNI",
            Int8Kernel::AvxVnni => "AVX-VNNI",
            Int8Kernel::Avx2 => "AVX2",
            Int8Kernel::Portable => "no AVX2",
        }
    }

    /// Whether the kernel uses vector instructions (the portable one is much slower than f32).
    pub fn is_fast(self) -> bool {
        self != Int8Kernel::Portable
    }

    /// Bytes of a quad of activations as the kernel reads them: four, or eight where each is
    /// widened to 16 bits ([`Int8Kernel::Avx2`]).
    fn quad_bytes(self) -> usize {
        match self {
            Int8Kernel::Avx2 => 8,
            _ => 4,
        }
    }

    /// Rows of activations per block.
    fn block_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => amx::MR,
            _ => MR,
        }
    }
}

/// A weight `[k, n]` (rows: inputs, columns: outputs) quantised per column and packed.
#[derive(Debug)]
pub struct PackedWeight {
    k: usize,
    n: usize,
    /// Panel `j`, row quad `q`, column `c` at `(j * quads + q) * NR + c`: the `i8`s of rows
    /// `4q..4q + 4` of column `j * NR + c`, lowest byte first; zero beyond `k` and `n`.
    data: Vec<u32>,
    /// Per column: `max |w| / 127` (1 for a column of zeros), padded with zeros to whole panels.
    scales: Vec<f32>,
    /// Per column: the sum of its quantised weights (for the activations' zero point), padded.
    sums: Vec<i32>,
}

impl PackedWeight {
    /// Quantises and packs `w`, `[k, n]` row-major.
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(
            w.len(),
            k * n,
            "int8 PackedWeight::new: a [{k}, {n}] weight"
        );
        let (quads, panels) = (k.div_ceil(4), n.div_ceil(NR));
        let mut scales = vec![0f32; panels * NR];
        let mut sums = vec![0i32; panels * NR];
        let mut q = vec![0i8; k * n];
        for c in 0..n {
            let max = (0..k).map(|r| w[r * n + c].abs()).fold(0f32, f32::max);
            let scale = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                1.0
            };
            scales[c] = scale;
            for r in 0..k {
                let v = (w[r * n + c] / scale).round().clamp(-127.0, 127.0) as i8;
                q[r * n + c] = v;
                sums[c] += v as i32;
            }
        }
        let mut data = vec![0u32; panels * quads * NR];
        for j in 0..panels {
            for p in 0..quads {
                for c in 0..NR.min(n - j * NR) {
                    let col = j * NR + c;
                    let mut word = 0u32;
                    for b in 0..4 {
                        let row = 4 * p + b;
                        if row < k {
                            word |= (q[row * n + col] as u8 as u32) << (8 * b);
                        }
                    }
                    data[(j * quads + p) * NR + c] = word;
                }
            }
        }
        PackedWeight {
            k,
            n,
            data,
            scales,
            sums,
        }
    }

    /// Quantises and packs a `[k, n]` tensor.
    pub fn from_tensor(w: &Tensor) -> Result<Self> {
        let (k, n) = w.dims2()?;
        let v = w.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::new(&v, k, n))
    }

    fn quads(&self) -> usize {
        self.k.div_ceil(4)
    }
}

/// Rows of activations quantised to `u8` each with its own scale and zero point:
/// `x ≈ scale * (u - zero_point)`.
struct QuantisedRows {
    /// Row `r` at `r * quad_bytes * quads`, its bytes in order (read in quads as
    /// [`PackedWeight::data`]), each followed by a zero byte where the kernel widens them; rows
    /// padded with zeros to whole quads and to whole blocks of the kernel's rows.
    data: Vec<u8>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

/// Lanes of the range search (independent minima and maxima the compiler vectorises).
const LANES: usize = 16;

/// The scale and zero point of a row: its range widened to hold 0, in 255 steps (NaNs are
/// ignored; an infinity gives scale 1).
#[inline(always)]
fn row_range(row: &[f32]) -> (f32, i32) {
    let (mut lo, mut hi) = ([0f32; LANES], [0f32; LANES]);
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    for (i, &v) in chunks.remainder().iter().enumerate() {
        lo[i] = if v < lo[i] { v } else { lo[i] };
        hi[i] = if v > hi[i] { v } else { hi[i] };
    }
    let lo = lo.into_iter().fold(0f32, f32::min);
    let hi = hi.into_iter().fold(0f32, f32::max);
    let scale = (hi - lo) / 255.0;
    if scale > 0.0 && scale.is_finite() {
        (scale, ((-lo / scale).round() as i32).clamp(0, 255))
    } else {
        (1.0, 0)
    }
}

/// Quantises one row into `out` (its bytes) and returns its scale and zero point, with AVX-512 or
/// AVX2 where the CPU has them: the quantisation runs once per product over all of its input, and the
/// compiler leaves the clamped conversion to bytes scalar (a NaN check and a saturating convert
/// per value), a third as long as the VNNI product itself (`serve` at 64 clients: 18% of the
/// samples against the kernel's 37%). All versions do the same IEEE operations in the same order
/// (a product, a sum, a clamp, a truncation), so they give the same bytes.
fn quantise_row(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    {
        use super::host::Simd;
        if Simd::Avx512.runs_here() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { quantise_row_avx512(row, out) };
        }
        if Simd::Avx2.runs_here() {
            // SAFETY: the CPU has AVX2.
            return unsafe { quantise_row_avx2::<false>(row, out) };
        }
    }
    quantise_row_portable(row, out)
}

/// A row's scale and zero point, and the two terms each value's byte is `(v * a + b)` of.
#[inline(always)]
fn row_terms(row: &[f32]) -> (f32, i32, f32, f32) {
    let (scale, zero) = row_range(row);
    // Rounds half up: the conversion truncates, and the value is at least -0.5 once clamped.
    (scale, zero, 1.0 / scale, zero as f32 + 0.5)
}

/// [`quantise_row`] in plain Rust.
fn quantise_row_portable(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    let (scale, zero, inverse, offset) = row_terms(row);
    quantise_values(row, out, inverse, offset);
    (scale, zero)
}

#[inline(always)]
fn quantise_values(row: &[f32], out: &mut [u8], inverse: f32, offset: f32) {
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v * inverse + offset).clamp(0.0, 255.0) as u8;
    }
}

/// [`quantise_row`] on 16 lanes: `max`/`min` against 0 and 255 give the clamp (a NaN becomes 0,
/// as `as u8` makes it), `vcvttps2dq` the truncation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantise_row_avx512(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    let (scale, zero, inverse, offset) = row_terms(row);
    let n = row.len().min(out.len());
    let (a, b) = (_mm512_set1_ps(inverse), _mm512_set1_ps(offset));
    let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: `i + 16 <= n`, within both slices.
        unsafe {
            let v = _mm512_loadu_ps(row.as_ptr().add(i));
            let x = _mm512_add_ps(_mm512_mul_ps(v, a), b);
            // `max(x, 0)` answers 0 for a NaN `x` (its second operand).
            let c = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c));
            _mm_storeu_si128(out.as_mut_ptr().add(i).cast(), bytes);
        }
    }
    quantise_values(&row[full..n], &mut out[full..n], inverse, offset);
    (scale, zero)
}

/// [`quantise_row`] on 8 lanes, as [`quantise_row_avx512`]; with `WIDE`, each byte followed by
/// a zero byte (`out` twice as long), as [`Int8Kernel::Avx2`] reads them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantise_row_avx2<const WIDE: bool>(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    use std::arch::x86_64::*;
    let (scale, zero, inverse, offset) = row_terms(row);
    let width = if WIDE { 2 } else { 1 };
    let n = row.len().min(out.len() / width);
    let (a, b) = (_mm256_set1_ps(inverse), _mm256_set1_ps(offset));
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0));
    let full = n / 16 * 16;
    for i in (0..full).step_by(16) {
        // SAFETY: `i + 16 <= n`, within `row`, and `width * (i + 16) <= out.len()`.
        unsafe {
            let [q0, q1] = [0, 8].map(|h| {
                let v = _mm256_loadu_ps(row.as_ptr().add(i + h));
                let x = _mm256_add_ps(_mm256_mul_ps(v, a), b);
                // `max(x, 0)` answers 0 for a NaN `x` (its second operand).
                _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(x, lo), hi))
            });
            // Packing works within 128-bit lanes: the permute puts the 16 values back in order.
            let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(q0, q1));
            if WIDE {
                _mm256_storeu_si256(out.as_mut_ptr().add(2 * i).cast(), words);
            } else {
                let bytes =
                    _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(words, words));
                _mm_storeu_si128(
                    out.as_mut_ptr().add(i).cast(),
                    _mm256_castsi256_si128(bytes),
                );
            }
        }
    }
    if WIDE {
        let mut narrow = [0u8; 16];
        let rest = n - full;
        quantise_values(&row[full..n], &mut narrow[..rest], inverse, offset);
        for (j, &v) in narrow[..rest].iter().enumerate() {
            out[2 * (full + j)] = v;
            out[2 * (full + j) + 1] = 0;
        }
    } else {
        quantise_values(&row[full..n], &mut out[full..n], inverse, offset);
    }
    (scale, zero)
}

/// The rows of `x` (rows of `k`) quantised for `kernel`.
fn quantise_rows(x: &[f32], k: usize, kernel: Int8Kernel) -> QuantisedRows {
    let (rows, block_rows) = (x.len() / k.max(1), kernel.block_rows());
    let stride = kernel.quad_bytes() * k.div_ceil(4);
    let mut data = vec![0u8; rows.div_ceil(block_rows) * block_rows * stride];
    let mut ranges = vec![(0f32, 0i32); rows];
    let one = |row: &[f32], out: &mut [u8]| match kernel {
        // SAFETY: the kernel runs here (its caller checks), so the CPU has AVX2.
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => unsafe { quantise_row_avx2::<true>(row, out) },
        _ => quantise_row(row, out),
    };
    if x.len() >= PAR_QUANTISE_MIN {
        x.par_chunks_exact(k)
            .zip(data.par_chunks_exact_mut(stride))
            .zip(ranges.par_iter_mut())
            .for_each(|((row, out), range)| *range = one(row, out));
    } else {
        x.chunks_exact(k)
            .zip(data.chunks_exact_mut(stride))
            .zip(ranges.iter_mut())
            .for_each(|((row, out), range)| *range = one(row, out));
    }
    let (scales, zero_points) = ranges.into_iter().unzip();
    QuantisedRows {
        data,
        scales,
        zero_points,
    }
}

/// `x w` for `x` `[.., k]` (f32) with the int8 weight `w`, on the fastest kernel this CPU has:
/// f32 `[.., n]`.
pub fn matmul(x: &Tensor, w: &Arc<PackedWeight>) -> Result<Tensor> {
    matmul_with(x, w, Int8Kernel::best(), After::Nothing)
}

/// [`matmul`] on the given kernel (an error where this CPU lacks it), then `after`, in the
/// product's parallel tasks.
pub fn matmul_with(
    x: &Tensor,
    w: &Arc<PackedWeight>,
    kernel: Int8Kernel,
    after: After<'_>,
) -> Result<Tensor> {
    epilogue::run(x, Int8Matmul(Arc::clone(w), kernel), after)
}

struct Int8Matmul(Arc<PackedWeight>, Int8Kernel);

impl Product for Int8Matmul {
    const NAME: &'static str = "newstag-int8-matmul";

    fn dims(&self) -> (usize, usize) {
        (self.0.k, self.0.n)
    }

    fn forward(&self, x: Input<'_>, rows: usize, then: Epilogue<'_>) -> Result<Vec<f32>> {
        let (w, kernel) = (&self.0, self.1);
        if !kernel.runs_here() {
            bail!("int8 matmul: this CPU lacks {}", kernel.name())
        }
        let mr = kernel.block_rows();
        let a = quantise_rows(x.data, w.k, kernel);
        let (quads, n) = (w.quads(), w.n);
        let row_bytes = kernel.quad_bytes() * quads;
        let blocks = |out: DisjointOut, rb: usize, j: usize, _: usize| {
            let block = Block {
                a: &a.data[rb * mr * row_bytes..][..mr * row_bytes],
                scales: &a.scales[rb * mr..],
                zero_points: &a.zero_points[rb * mr..],
                rows: mr.min(rows - rb * mr),
                panel: &w.data[j * quads * NR..][..quads * NR],
                col_scales: &w.scales[j * NR..][..NR],
                col_sums: &w.sums[j * NR..][..NR],
                cols: NR.min(n - j * NR),
                quads,
            };
            // SAFETY: this call alone writes rows `rb * mr..` (`block.rows` of them) and columns
            // `j * NR..` (`block.cols`) of `y`, which has rows of `n`.
            let y = unsafe { out.at(rb * mr * n + j * NR) };
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AMX-INT8 is usable (checked above); `block.a` holds `amx::MR` rows.
                Int8Kernel::Amx => unsafe { amx::block(&block, y, n) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX-512F and AVX512-VNNI (`runs_here`, checked above).
                Int8Kernel::Avx512Vnni => unsafe { vnni::block_512(&block, y, n) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 and AVX-VNNI (checked above).
                Int8Kernel::AvxVnni => unsafe { vnni::block_256(&block, y, n) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has AVX2 (checked above); `block.a` holds widened quads.
                Int8Kernel::Avx2 => unsafe { avx2::block(&block, y, n) },
                // SAFETY: `y` as above.
                _ => unsafe { portable_block(&block, y, n) },
            }
        };
        // SAFETY: every kernel stores all `block.rows` x `block.cols` of its block (row blocks of
        // `mr` up to `rows`, panels of NR up to `n`), and only those.
        Ok(unsafe { then.par_blocks((rows, w.k, n), (mr, NR), 1, blocks) })
    }
}

/// One block of the product: a block of rows of quantised activations times a weight panel.
struct Block<'a> {
    /// The kernel's block of rows, of `quads` quads of bytes each (widened for
    /// [`Int8Kernel::Avx2`]).
    a: &'a [u8],
    scales: &'a [f32],
    zero_points: &'a [i32],
    /// The rows to store (the rest of `a` is padding).
    rows: usize,
    /// `quads * NR` packed weights.
    panel: &'a [u32],
    col_scales: &'a [f32],
    col_sums: &'a [i32],
    /// The columns to store.
    cols: usize,
    quads: usize,
}

impl Block<'_> {
    /// The f32 result of row `r`, column `c` from its exact sum `acc`: what every kernel computes.
    fn dequantise(&self, r: usize, c: usize, acc: i32) -> f32 {
        let exact = acc.wrapping_sub(self.zero_points[r].wrapping_mul(self.col_sums[c]));
        exact as f32 * (self.scales[r] * self.col_scales[c])
    }
}

/// The four byte products of a quad of `u8` activations and `i8` weights, summed.
fn dot4(a: u32, w: u32) -> i32 {
    (0..4)
        .map(|b| ((a >> (8 * b)) & 0xff) as i32 * ((w >> (8 * b)) as u8 as i8) as i32)
        .sum()
}

/// The portable kernel.
///
/// # Safety
/// `y` points at row 0, column 0 of the block in a matrix with rows of `ldy`, and the block's
/// `rows x cols` elements are this call's alone to write.
unsafe fn portable_block(b: &Block<'_>, y: *mut f32, ldy: usize) {
    for r in 0..b.rows {
        let a = &b.a[r * 4 * b.quads..][..4 * b.quads];
        let mut acc = [0i32; NR];
        for (p, a) in a.chunks_exact(4).enumerate() {
            let a = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
            let w = &b.panel[p * NR..][..NR];
            for (acc, &w) in acc.iter_mut().zip(w) {
                *acc = acc.wrapping_add(dot4(a, w));
            }
        }
        for (c, &acc) in acc.iter().enumerate().take(b.cols) {
            // SAFETY: row `r < rows`, column `c < cols` (the caller's promise).
            unsafe { *y.add(r * ldy + c) = b.dequantise(r, c, acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{Block, MR, NR};
    use std::arch::x86_64::*;

    /// The store masks of the two 16-column halves of a panel with `cols` valid columns.
    fn masks(cols: usize) -> [u16; 2] {
        let half = |c: usize| if c >= 16 { 0xffff } else { (1u16 << c) - 1 };
        [half(cols), half(cols.saturating_sub(16))]
    }

    /// The dequantisation of a panel's rows on 512-bit registers: the columns' sums and scales
    /// loaded once, a row's two accumulators stored as [`Block::dequantise`] computes them.
    pub(super) struct Epilogue {
        masks: [u16; 2],
        sums: [__m512i; 2],
        cols: [__m512; 2],
    }

    impl Epilogue {
        /// # Safety
        /// The CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn new(b: &Block<'_>) -> Self {
            // SAFETY: the panel's scales and sums hold NR values.
            unsafe {
                Epilogue {
                    masks: masks(b.cols),
                    sums: [0, 16].map(|h| _mm512_loadu_si512(b.col_sums.as_ptr().add(h).cast())),
                    cols: [0, 16].map(|h| _mm512_loadu_ps(b.col_scales.as_ptr().add(h))),
                }
            }
        }

        /// Stores row `r` of the block from its exact sums `acc` (columns 0-15 and 16-31).
        ///
        /// # Safety
        /// The CPU must have AVX-512F, `r < b.rows`, and `y` is as for
        /// [`super::portable_block`].
        #[inline]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn store(
            &self,
            b: &Block<'_>,
            r: usize,
            acc: [__m512i; 2],
            y: *mut f32,
            ldy: usize,
        ) {
            let zero = _mm512_set1_epi32(b.zero_points[r]);
            let row_scale = _mm512_set1_ps(b.scales[r]);
            for (h, acc) in acc.into_iter().enumerate() {
                let exact = _mm512_sub_epi32(acc, _mm512_mullo_epi32(zero, self.sums[h]));
                let v = _mm512_mul_ps(
                    _mm512_cvtepi32_ps(exact),
                    _mm512_mul_ps(row_scale, self.cols[h]),
                );
                // SAFETY: the masked columns of row `r < rows` lie in the block (the caller's
                // promise).
                unsafe { _mm512_mask_storeu_ps(y.add(r * ldy + 16 * h), self.masks[h], v) };
            }
        }
    }

    /// The AVX512-VNNI kernel: all [`MR`] rows at once, two 16-lane accumulators each.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and AVX512-VNNI; `y` as for [`super::portable_block`].
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn block_512(b: &Block<'_>, y: *mut f32, ldy: usize) {
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let (a, panel) = (b.a.as_ptr(), b.panel.as_ptr());
        for p in 0..b.quads {
            // SAFETY: `panel` holds `quads * NR` words and `a` `MR * quads` quads of bytes.
            unsafe {
                let w0 = _mm512_loadu_si512(panel.add(p * NR).cast());
                let w1 = _mm512_loadu_si512(panel.add(p * NR + 16).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let quad = a.add(4 * (r * b.quads + p)).cast::<i32>();
                    let x = _mm512_set1_epi32(quad.read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], x, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], x, w1);
                }
            }
        }
        // SAFETY: the CPU has AVX-512F (the caller's promise).
        let epilogue = unsafe { Epilogue::new(b) };
        // SAFETY: `y` as the caller promises.
        let store = |r: usize, acc: [__m512i; 2]| unsafe { epilogue.store(b, r, acc, y, ldy) };
        // Row by row with constant indices: the accumulators stay in registers (a loop over the
        // first `b.rows` kept a copy in memory, zeroed by a call to memset on every block).
        macro_rules! store_rows {
            ($($r:literal)*) => { $( if $r < b.rows { store($r, acc[$r]); } )* };
        }
        const _: () = assert!(MR == 12, "store_rows! lists the MR rows");
        store_rows!(0 1 2 3 4 5 6 7 8 9 10 11);
    }

    /// The AVX-VNNI kernel: two rows at a time (16 vector registers), four 8-lane accumulators
    /// each.
    ///
    /// # Safety
    /// The CPU must have AVX2 and AVX-VNNI; `y` as for [`super::portable_block`].
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn block_256(b: &Block<'_>, y: *mut f32, ldy: usize) {
        let (a, panel) = (b.a.as_ptr(), b.panel.as_ptr());
        for r0 in (0..b.rows).step_by(2) {
            let mut acc = [[_mm256_setzero_si256(); 4]; 2];
            for p in 0..b.quads {
                // SAFETY: as in `block_512`; row `r0 + 1 < MR` exists (padding at worst).
                unsafe {
                    let w =
                        [0, 8, 16, 24].map(|o| _mm256_loadu_si256(panel.add(p * NR + o).cast()));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let quad = a.add(4 * ((r0 + i) * b.quads + p)).cast::<i32>();
                        let x = _mm256_set1_epi32(quad.read_unaligned());
                        for (acc, &w) in acc.iter_mut().zip(&w) {
                            *acc = _mm256_dpbusd_avx_epi32(*acc, x, w);
                        }
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate().take(b.rows - r0) {
                let r = r0 + i;
                let zero = _mm256_set1_epi32(b.zero_points[r]);
                let row_scale = _mm256_set1_ps(b.scales[r]);
                for (q, &acc) in acc.iter().enumerate() {
                    // SAFETY: as in `block_512`.
                    unsafe {
                        let sums = _mm256_loadu_si256(b.col_sums.as_ptr().add(8 * q).cast());
                        let exact = _mm256_sub_epi32(acc, _mm256_mullo_epi32(zero, sums));
                        let cols = _mm256_loadu_ps(b.col_scales.as_ptr().add(8 * q));
                        let v = _mm256_mul_ps(
                            _mm256_cvtepi32_ps(exact),
                            _mm256_mul_ps(row_scale, cols),
                        );
                        let mut lanes = [0f32; 8];
                        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                        let valid = b.cols.saturating_sub(8 * q).min(8);
                        std::ptr::copy_nonoverlapping(
                            lanes.as_ptr(),
                            y.add(r * ldy + 8 * q),
                            valid,
                        );
                    }
                }
            }
        }
    }
}

/// The AVX2 kernel: a quad of widened activations (four 16-bit values, broadcast) times the
/// quads of four columns widened to 16 bits (`vpmovsxbw`) gives, per column, two 32-bit sums of
/// two products (`vpmaddwd`), exact; the two are added at the end. Six rows by eight columns at
/// a time: twelve accumulators, two weight registers, a broadcast and a product (16 of 16).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, NR};
    use std::arch::x86_64::*;

    /// Rows per pass.
    const ROWS: usize = 6;

    /// # Safety
    /// The CPU must have AVX2; `b.a` holds widened quads ([`super::Int8Kernel::quad_bytes`]) of
    /// whole blocks of rows; `y` as for [`super::portable_block`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(b: &Block<'_>, y: *mut f32, ldy: usize) {
        for r0 in (0..b.rows).step_by(ROWS) {
            for c0 in (0..b.cols).step_by(8) {
                // SAFETY: rows `r0..r0 + ROWS` exist in `b.a` (MR is a multiple of ROWS; padding
                // at worst) and columns `c0..c0 + 8` in the panel.
                unsafe {
                    if b.rows - r0 <= 3 {
                        pass::<3>(b, r0, c0, y, ldy)
                    } else {
                        pass::<ROWS>(b, r0, c0, y, ldy)
                    }
                }
            }
        }
    }

    /// Rows `r0..r0 + M` (those below `b.rows` stored), columns `c0..c0 + 8` (those below
    /// `b.cols`).
    ///
    /// # Safety
    /// As for [`block`].
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn pass<const M: usize>(b: &Block<'_>, r0: usize, c0: usize, y: *mut f32, ldy: usize) {
        const _: () = assert!(super::MR.is_multiple_of(ROWS));
        let (rows, cols) = ((b.rows - r0).min(M), (b.cols - c0).min(8));
        let mut acc = [[_mm256_setzero_si256(); 2]; M];
        let a = b.a.as_ptr().wrapping_add(8 * r0 * b.quads);
        let panel = b.panel.as_ptr().wrapping_add(c0);
        let row: [*const u8; M] =
            std::hint::black_box(std::array::from_fn(|r| a.wrapping_add(8 * r * b.quads)));
        for p in 0..b.quads {
            // SAFETY: `panel` holds `quads * NR` words from `c0` (`c0 + 8 <= NR`), each row
            // `quads` widened quads of 8 bytes.
            unsafe {
                let w = [0, 4]
                    .map(|h| _mm256_cvtepi8_epi16(_mm_loadu_si128(panel.add(p * NR + h).cast())));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi64x(row[r].add(8 * p).cast::<i64>().read_unaligned());
                    acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x, w[0]));
                    acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x, w[1]));
                }
            }
        }
        // SAFETY: the panel's sums and scales hold NR values (`c0 + 8 <= NR`).
        let (sums, col_scales) = unsafe {
            (
                _mm256_loadu_si256(b.col_sums.as_ptr().add(c0).cast()),
                _mm256_loadu_ps(b.col_scales.as_ptr().add(c0)),
            )
        };
        let store = |r: usize, acc: [__m256i; 2]| {
            // Lanes hold columns (0, 0, 1, 1, 2, 2, 3, 3) and (4, 4, ..): the pairs added give
            // (0, 1, 4, 5 | 2, 3, 6, 7), which the permute puts in order.
            let exact =
                _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc[0], acc[1]));
            let (row, zero) = (r0 + r, _mm256_set1_epi32(b.zero_points[r0 + r]));
            let exact = _mm256_sub_epi32(exact, _mm256_mullo_epi32(zero, sums));
            let scale = _mm256_mul_ps(_mm256_set1_ps(b.scales[row]), col_scales);
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(exact), scale);
            // SAFETY: row `row < b.rows`, columns `c0..c0 + cols` lie in the block.
            unsafe {
                let to = y.add(row * ldy + c0);
                if cols == 8 {
                    _mm256_storeu_ps(to, v);
                } else {
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), to, cols);
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

/// The AMX-INT8 kernel: `tdpbusd` multiplies a tile of 16 rows x 64 activation bytes by one of
/// 16 quads x 16 weight columns into 16 x 16 `i32`s, 1,024 multiply-adds per instruction against
/// `vpdpbusd`'s 64. Rust has no stable AMX intrinsics, so the tile instructions are inline
/// assembly; the weight panels need no other layout (a tile row is 16 consecutive columns of one
/// quad, a panel row is 32), and the activations are read in place.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::vnni::Epilogue;
    use super::{Block, NR};
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::Cell;
    use std::sync::OnceLock;

    /// Rows per block: two tiles of 16.
    pub(super) const MR: usize = 32;
    /// Quads per tile row (64 bytes).
    const QUADS: usize = 16;

    /// The `ldtilecfg` operand: palette 1, tiles 0-7 all 16 rows of 64 bytes (0-3 accumulate,
    /// 4-5 hold activations, 6-7 weights).
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        bytes_per_row: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Whether this CPU has AMX-INT8 (and the AVX512-VNNI the epilogue and the last quads use)
    /// and the operating system lets this process use tile registers (asked once).
    pub(super) fn usable() -> bool {
        static USABLE: OnceLock<bool> = OnceLock::new();
        *USABLE.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && cpu_has_amx_int8()
                && system_grants_tiles()
        })
    }

    /// CPUID leaf 7: AMX-TILE (EDX bit 24) and AMX-INT8 (bit 25).
    fn cpu_has_amx_int8() -> bool {
        if __cpuid(0).eax < 7 {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        edx & (1 << 24) != 0 && edx & (1 << 25) != 0
    }

    /// Linux hands out the 8 KiB of tile state only to processes that ask for it.
    #[cfg(target_os = "linux")]
    fn system_grants_tiles() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: the request passes no memory; it only asks for permission to use tile state.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn system_grants_tiles() -> bool {
        false
    }

    thread_local! {
        /// Whether this thread has loaded [`CONFIG`]. This module is the process's only user of
        /// tile registers and never releases them, and the system keeps a thread's tile
        /// configuration across context switches and signals, so once loaded it stays.
        static CONFIGURED: Cell<bool> = const { Cell::new(false) };
    }

    /// Loads [`CONFIG`] once per thread: loading it costs about a tenth of a block's products,
    /// and reading it back to compare (`sttilecfg`) stalled the block for a fifth of its time
    /// (`serve` at 64 clients).
    ///
    /// # Safety
    /// [`usable`] must have returned true.
    unsafe fn configure_tiles() {
        CONFIGURED.with(|configured| {
            if !configured.get() {
                // SAFETY: AMX-TILE is there and usable; the operand is 64 aligned bytes.
                unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
                configured.set(true);
            }
        });
    }

    /// Exact sums of a block, row by row, 64-byte aligned for the tile stores.
    #[repr(C, align(64))]
    struct Sums([[i32; NR]; MR]);

    /// The block's products: whole tile steps of 16 quads on AMX, the last quads (fewer than
    /// 16) and the dequantisation on AVX-512.
    ///
    /// # Safety
    /// [`usable`] must have returned true, `b.a` must hold [`MR`] rows, and `y` is as for
    /// [`super::portable_block`].
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn block(b: &Block<'_>, y: *mut f32, ldy: usize) {
        debug_assert!(b.a.len() >= MR * 4 * b.quads && b.panel.len() >= b.quads * NR);
        // Not zeroed: the tile stores write all of it (zeroing 4 KiB per block took a fifth as long
        // as the block's products).
        let mut sums = std::mem::MaybeUninit::<Sums>::uninit();
        let (a, w) = (b.a.as_ptr(), b.panel.as_ptr().cast::<u8>());
        let (a_stride, w_stride) = (4 * b.quads, 4 * NR);
        let steps = b.quads / QUADS;
        // SAFETY: the tiles are usable and configured; every tile load reads 16 rows of 64 bytes
        // within `b.a` (rows `0..32` of `a_stride` bytes, bytes `64 s..64 s + 64` with
        // `64 s + 64 <= a_stride`) and `b.panel` (quads `16 s..16 s + 16` of `quads`), and the
        // stores write the 32 x 32 `i32`s of `sums`.
        unsafe {
            configure_tiles();
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in 0..steps {
                let a0 = a.add(64 * s);
                let w0 = w.add(s * QUADS * w_stride);
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}]",
                    "tileloadd tmm5, [{a1} + {sa}]",
                    "tileloadd tmm6, [{w0} + {sw}]",
                    "tileloadd tmm7, [{w1} + {sw}]",
                    "tdpbusd tmm0, tmm4, tmm6",
                    "tdpbusd tmm1, tmm4, tmm7",
                    "tdpbusd tmm2, tmm5, tmm6",
                    "tdpbusd tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a0.add(16 * a_stride),
                    w0 = in(reg) w0,
                    w1 = in(reg) w0.add(64),
                    sa = in(reg) a_stride,
                    sw = in(reg) w_stride,
                    options(nostack, readonly),
                );
            }
            let c = sums.as_mut_ptr().cast::<u8>();
            let c_stride = 4 * NR;
            asm!(
                "tilestored [{c0} + {s}], tmm0",
                "tilestored [{c1} + {s}], tmm1",
                "tilestored [{c2} + {s}], tmm2",
                "tilestored [{c3} + {s}], tmm3",
                c0 = in(reg) c,
                c1 = in(reg) c.add(64),
                c2 = in(reg) c.add(16 * c_stride),
                c3 = in(reg) c.add(16 * c_stride + 64),
                s = in(reg) c_stride,
                options(nostack),
            );
        }
        // SAFETY: the four tile stores above wrote its 32 rows of 32 sums.
        let sums = unsafe { sums.assume_init() };
        // SAFETY: the CPU has AVX-512F (the caller's promise).
        let epilogue = unsafe { Epilogue::new(b) };
        for (r, row) in sums.0.iter().enumerate().take(b.rows) {
            // SAFETY: `row` holds NR sums; the tail's quads lie in `b.a` and `b.panel` as above;
            // `r < b.rows` and `y` as the caller promises.
            unsafe {
                let mut acc = [0, 16].map(|h| _mm512_loadu_si512(row.as_ptr().add(h).cast()));
                for p in steps * QUADS..b.quads {
                    let x = _mm512_set1_epi32(
                        a.add(r * a_stride + 4 * p).cast::<i32>().read_unaligned(),
                    );
                    for (h, acc) in acc.iter_mut().enumerate() {
                        let w = _mm512_loadu_si512(b.panel.as_ptr().add(p * NR + 16 * h).cast());
                        *acc = _mm512_dpbusd_epi32(*acc, x, w);
                    }
                }
                epilogue.store(b, r, acc, y, ldy);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::host::AWKWARD_SHAPES;
    use candle_core::Device;

    fn product(x: &[f32], rows: usize, w: &Arc<PackedWeight>, kernel: Int8Kernel) -> Vec<f32> {
        let xt = Tensor::from_vec(x.to_vec(), (rows, w.k), &Device::Cpu).unwrap();
        let y = matmul_with(&xt, w, kernel, After::Nothing).unwrap();
        assert_eq!(y.dims(), [rows, w.n]);
        y.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn inputs(rows: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        // Skewed activations (as after GELU) and a few large ones, for the zero point and scale.
        let x = (0..rows * k)
            .map(|i| (i as f32 * 0.11).cos() + 0.3 + if i % 97 == 0 { 6.0 } else { 0.0 })
            .collect();
        let w = (0..k * n).map(|i| (i as f32 * 0.07).sin() * 0.2).collect();
        (x, w)
    }

    #[test]
    fn quantising_a_row_keeps_zero_exact_and_the_range_in_255_steps() {
        let row = [-1.0f32, 0.0, 0.6, 2.0, 1e-3];
        let mut out = [0u8; 5];
        let (scale, zero) = quantise_row(&row, &mut out);
        assert_eq!(scale, 3.0 / 255.0);
        assert_eq!(zero, 85);
        let bytes: Vec<i32> = out.iter().map(|&b| b as i32).collect();
        assert_eq!(bytes, [0, 85, 136, 255, 85]);
        for (&v, &b) in row.iter().zip(&bytes) {
            assert!((scale * (b - zero) as f32 - v).abs() <= scale / 2.0 + 1e-6);
        }
        // A row of zeros stays zeros.
        assert_eq!(quantise_row(&[0.0; 3], &mut out[..3]), (1.0, 0));
        assert_eq!(out[..3], [0; 3]);
        // NaNs do not widen the range; an infinity leaves no finite scale, hence scale 1.
        assert_eq!(row_range(&[f32::NAN, 1.0, -0.5]), (1.5 / 255.0, 85));
        assert_eq!(row_range(&[f32::INFINITY, 1.0]), (1.0, 0));
    }

    #[test]
    fn the_fast_quantiser_gives_the_portable_bytes() {
        // Rows of awkward lengths with ties, extremes, zeros and a NaN, through the dispatch
        // (AVX-512 where this CPU has it) and the portable code.
        for len in [1, 7, 16, 33, 384, 1537] {
            let row: Vec<f32> = (0..len)
                .map(|i| match i % 13 {
                    0 => 0.0,
                    1 => f32::NAN,
                    2 if len < 384 => 1e30,
                    3 => -3.5,
                    4 => -0.0,
                    5 if len == 33 => f32::INFINITY,
                    6 if len == 7 => f32::NEG_INFINITY,
                    // Values on a grid of halves.
                    7 | 8 => (i % 5) as f32 * 0.5 - 1.0,
                    _ => ((i * 7919) % 1000) as f32 / 37.0 - 13.5,
                })
                .collect();
            let (mut fast, mut portable) = (vec![0u8; len], vec![0u8; len]);
            assert_eq!(
                quantise_row(&row, &mut fast),
                quantise_row_portable(&row, &mut portable)
            );
            assert_eq!(fast, portable, "length {len}");
            // The widened bytes of the AVX2 kernel, each followed by a zero.
            #[cfg(target_arch = "x86_64")]
            if super::super::host::Simd::Avx2.runs_here() {
                let mut wide = vec![7u8; 2 * len];
                // SAFETY: the CPU has AVX2 (just checked).
                let range = unsafe { quantise_row_avx2::<true>(&row, &mut wide) };
                assert_eq!(range, quantise_row_portable(&row, &mut portable));
                let widened: Vec<u8> = portable.iter().flat_map(|&b| [b, 0]).collect();
                assert_eq!(wide, widened, "widened, length {len}");
                let mut narrow = vec![0u8; len];
                // SAFETY: as above.
                unsafe { quantise_row_avx2::<false>(&row, &mut narrow) };
                assert_eq!(narrow, portable, "AVX2, length {len}");
            }
        }
    }

    #[test]
    fn the_portable_kernel_is_the_exact_integer_product() {
        let (rows, k, n) = (5, 9, 35);
        let (x, w) = inputs(rows, k, n);
        let packed = Arc::new(PackedWeight::new(&w, k, n));
        let a = quantise_rows(&x, k, Int8Kernel::Portable);
        let got = product(&x, rows, &packed, Int8Kernel::Portable);
        let quads = k.div_ceil(4);
        for r in 0..rows {
            for c in 0..n {
                // From the unpacked integers, one product at a time.
                let mut exact = 0i64;
                for i in 0..k {
                    let u = a.data[r * 4 * quads + i] as i64;
                    let (j, col) = (c / NR, c % NR);
                    let word = packed.data[(j * quads + i / 4) * NR + col];
                    let q = (word >> (8 * (i % 4))) as u8 as i8 as i64;
                    exact += (u - a.zero_points[r] as i64) * q;
                }
                let want = exact as f32 * (a.scales[r] * packed.scales[c]);
                assert_eq!(got[r * n + c], want, "row {r}, column {c}");
                // And close to the f32 product.
                let f: f32 = (0..k).map(|i| x[r * k + i] * w[i * n + c]).sum();
                assert!((got[r * n + c] - f).abs() < 0.05 * (1.0 + f.abs()), "{f}");
            }
        }
    }

    #[test]
    fn the_fast_kernels_give_the_portable_bits_at_awkward_shapes() {
        let fast: Vec<_> = Int8Kernel::ALL
            .into_iter()
            .filter(|k| k.is_fast() && k.runs_here())
            .collect();
        #[cfg(target_arch = "x86_64")]
        assert!(
            !fast.is_empty() || !std::arch::is_x86_feature_detected!("avx2"),
            "a CPU with AVX2 runs a fast kernel"
        );
        // And AMX's: two row tiles and a ragged third block, whole tile steps of 64 bytes with
        // and without a remainder.
        let tiles = [(70, 64, 40), (33, 100, 64), (64, 448, 33)];
        for (rows, k, n) in AWKWARD_SHAPES.into_iter().chain(tiles) {
            let (x, w) = inputs(rows, k, n);
            let packed = Arc::new(PackedWeight::new(&w, k, n));
            let want = product(&x, rows, &packed, Int8Kernel::Portable);
            for &kernel in &fast {
                assert_eq!(
                    product(&x, rows, &packed, kernel),
                    want,
                    "{kernel:?} {rows}x{k}x{n}"
                );
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_bits_alone_as_in_any_batch() {
        let (rows, k, n) = (40, 80, 40);
        let (x, w) = inputs(rows, k, n);
        let packed = Arc::new(PackedWeight::new(&w, k, n));
        let kernel = Int8Kernel::best();
        let all = product(&x, rows, &packed, kernel);
        for r in [0, 11, 12, 31, 32, 39] {
            let alone = product(&x[r * k..][..k], 1, &packed, kernel);
            assert_eq!(alone, all[r * n..][..n], "row {r}");
        }
    }

    #[test]
    fn dispatch_picks_the_fastest_kernel_this_cpu_runs() {
        let best = Int8Kernel::best();
        assert!(best.runs_here());
        assert!(Int8Kernel::Portable.runs_here());
        let first = Int8Kernel::ALL.into_iter().position(|k| k == best).unwrap();
        assert!(Int8Kernel::ALL[..first].iter().all(|k| !k.runs_here()));
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let vnni = has!("avx512vnni") && has!("avx512f");
            // AMX as /proc/cpuinfo reports it (the CPU's flags and the kernel's support).
            let amx = std::fs::read_to_string("/proc/cpuinfo")
                .map(|info| info.split_whitespace().any(|flag| flag == "amx_int8"))
                .unwrap_or(false);
            assert_eq!(
                best == Int8Kernel::Amx,
                amx && vnni && cfg!(target_os = "linux")
            );
            assert_eq!(best == Int8Kernel::Avx512Vnni, vnni && !amx);
            let avx_vnni = has!("avx2") && has!("avxvnni");
            assert_eq!(best == Int8Kernel::AvxVnni, avx_vnni && !vnni);
            let avx2 = has!("avx2") && has!("fma");
            assert_eq!(best == Int8Kernel::Avx2, avx2 && !avx_vnni && !vnni);
        }
    }

    #[test]
    fn a_kernel_the_cpu_lacks_or_a_mismatched_input_is_an_error() {
        let packed = Arc::new(PackedWeight::new(&[0.5; 6], 2, 3));
        let x = Tensor::zeros((4, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(matmul(&x, &packed).is_err());
        let x = Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        for kernel in Int8Kernel::ALL {
            assert_eq!(
                matmul_with(&x, &packed, kernel, After::Nothing).is_ok(),
                kernel.runs_here()
            );
        }
    }
}
