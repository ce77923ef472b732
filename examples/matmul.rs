//! What candle's matrix multiply reaches on this machine, fp32 and bf16, at the shape of the
//! encoder's feed-forward layer (4096 x 384 @ 384 x 1536): the ceiling `scripts/bench.sh` divides
//! tokens/s by. Prints one JSON line.
//!
//! `cargo run --release --example matmul`

use candle_core::{DType, Device, Tensor};
use std::time::Instant;

fn gflops(dtype: DType) -> candle_core::Result<f64> {
    let (m, k, n) = (4096, 384, 1536);
    let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?.to_dtype(dtype)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu)?.to_dtype(dtype)?;
    for _ in 0..3 {
        a.matmul(&b)?;
    }
    let reps = 20;
    let started = Instant::now();
    for _ in 0..reps {
        a.matmul(&b)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(2.0 * (m * k * n * reps) as f64 / secs / 1e9)
}

fn main() -> candle_core::Result<()> {
    // SAFETY: no other thread has been started yet.
    unsafe { newstag::device::fix_thread_count() };
    println!(
        "{{\"fp32\": {:.1}, \"bf16\": {:.1}, \"threads\": {}}}",
        gflops(DType::F32)?,
        gflops(DType::BF16)?,
        candle_core::utils::get_num_threads()
    );
    Ok(())
}
