//! What the matrix multiply reaches on this machine at the shape of the encoder's feed-forward
//! layer (4096 x 384 @ 384 x 1536): the fp32 product inference uses (newstag's packed kernel on
//! CPUs with AVX-512 or AVX2, candle's elsewhere), newstag's bf16 kernel where the CPU has
//! AVX512-BF16 (`null` elsewhere), and each int8 kernel this CPU runs (as GOP/s, by instruction
//! set). The ceiling `scripts/bench.sh` divides tokens/s by. Prints one JSON line.
//!
//! `cargo run --release --example matmul`

use candle_core::{Device, Tensor};
use newstag::kernels::{bf16, fp32, int8, After};
use std::sync::Arc;
use std::time::Instant;

const M: usize = 4096;
const K: usize = 384;
const N: usize = 1536;

/// GFLOP/s of `product`, after a warm-up.
fn gflops(product: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<f64> {
    for _ in 0..3 {
        product()?;
    }
    let reps = 20;
    let started = Instant::now();
    for _ in 0..reps {
        product()?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(2.0 * (M * K * N * reps) as f64 / secs / 1e9)
}

fn main() -> candle_core::Result<()> {
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::runtime::set_up(newstag::runtime::Workload::Inference) };
    newstag::runtime::on_compute_threads(|| {
        let a = Tensor::randn(0f32, 1.0, (M, K), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1.0, (K, N), &Device::Cpu)?;
        let kernel = fp32::Fp32Kernel::for_inference();
        let fp32_kernel = kernel.map_or("candle".to_string(), |k| format!("{k:?}"));
        let fp32 = match kernel {
            Some(kernel) => {
                let packed = Arc::new(fp32::PackedWeight::from_tensor(&b)?);
                gflops(|| fp32::matmul(&a, &packed, kernel, After::Nothing))?
            }
            None => gflops(|| a.matmul(&b))?,
        };
        let bf16 = if bf16::supported() {
            let packed = Arc::new(bf16::PackedWeight::from_tensor(&b)?);
            format!("{:.1}", gflops(|| bf16::matmul(&a, &packed))?)
        } else {
            "null".into()
        };
        let packed = Arc::new(int8::PackedWeight::from_tensor(&b)?);
        let mut int8 = Vec::new();
        for kernel in int8::Int8Kernel::ALL.into_iter().filter(|k| k.runs_here()) {
            let ops = gflops(|| int8::matmul_with(&a, &packed, kernel, After::Nothing))?;
            int8.push(format!("\"{}\": {ops:.1}", kernel.name()));
        }
        println!(
            "{{\"fp32\": {fp32:.1}, \"fp32_kernel\": \"{fp32_kernel}\", \"bf16\": {bf16}, \"int8\": {{{}}}, \"threads\": {}}}",
            int8.join(", "),
            candle_core::utils::get_num_threads()
        );
        Ok(())
    })
}
