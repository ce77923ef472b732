//! Times one training step (forward, backward, gradient clipping, AdamW) of a random
//! MiniLM-L6-sized encoder on random ids `[8, 256]`, and prints the median of N steps.
//!
//! ```sh
//! cargo run --release --example train_step -- [steps] [batch] [len] [--reference]
//! ```
//!
//! `--reference` trains through compositions of differentiable candle ops instead of newstag's
//! fused kernels (the same dropout masks) and updates with the tensor-op AdamW, for comparison;
//! the losses printed should agree to float rounding. Both runs get the allocator tuning of
//! `newstag::runtime::tune_allocator` (set `RAYON_NUM_THREADS` to fix the thread count).

use candle_core::{Device, Tensor};
use newstag::model::bert::{Bert, Dropout, Mode};
use newstag::model::config::{Activation, BertConfig};
use newstag::model::params::ParamStore;
use newstag::train::optim::{AdamW, AdamWConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let flags: Vec<String> = std::env::args().skip(1).collect();
    let reference = flags.iter().any(|a| a == "--reference");
    let args: Vec<usize> = flags
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let steps = args.first().copied().unwrap_or(5).max(1);
    let batch = args.get(1).copied().unwrap_or(8);
    let len = args.get(2).copied().unwrap_or(256);
    let config = BertConfig {
        vocab_size: 30522,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: Activation::Gelu,
        ..BertConfig::tiny(30522)
    };
    let dev = Device::Cpu;
    let store = ParamStore::fresh(7);
    let bert = Bert::new(&config, store.var_builder(&dev).pp("bert"))?;
    let vars = store.vars();
    let params: usize = vars.values().map(|v| v.elem_count()).sum();
    let mut opt = AdamW::new(vars.clone(), AdamWConfig::default())?;
    if reference {
        opt.use_tensor_ops()?;
    }

    let mut rng = StdRng::seed_from_u64(1);
    let ids: Vec<u32> = (0..batch * len)
        .map(|_| rng.random_range(0..config.vocab_size as u32))
        .collect();
    let ids = Tensor::from_vec(ids, (batch, len), &dev)?;
    let type_ids = ids.zeros_like()?;
    // Windows of similar but not equal length: the last few tokens of some rows are padding.
    let mask: Vec<u32> = (0..batch)
        .flat_map(|b| (0..len).map(move |t| u32::from(t + 4 * b < len + 8)))
        .collect();
    let mask = Tensor::from_vec(mask, (batch, len), &dev)?;
    let weights: Vec<f32> = (0..batch * len * config.hidden_size)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let weights = Tensor::from_vec(weights, (batch, len, config.hidden_size), &dev)?;

    println!(
        "{params} parameters, batch [{batch}, {len}], {} threads, {steps} steps (+1 warm-up), {} kernels",
        candle_core::utils::get_num_threads(),
        if reference { "reference" } else { "fused" }
    );
    let (mut fwd, mut bwd, mut upd, mut total) = (vec![], vec![], vec![], vec![]);
    for step in 0..=steps {
        let t0 = Instant::now();
        let dropout = Dropout::new(&config, step as u64);
        let mut mode = Mode::train(if reference {
            dropout.with_reference_kernels()
        } else {
            dropout
        });
        let out = bert.forward(&ids, &type_ids, &mask, None, &mut mode)?;
        let loss = (out.mul(&weights)?.sum_all()? / (batch * len) as f64)?;
        let loss_value = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let grads = mode.backward(&loss)?;
        let t2 = Instant::now();
        opt.step_clipped(&grads, 1e-4, 1.0)?;
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        println!(
            "step {step}: loss {loss_value:.5}  forward {:.0} ms  backward {:.0} ms  clip+adamw {:.0} ms  total {:.0} ms",
            ms(t0, t1),
            ms(t1, t2),
            ms(t2, t3),
            ms(t0, t3)
        );
        if step > 0 {
            fwd.push(ms(t0, t1));
            bwd.push(ms(t1, t2));
            upd.push(ms(t2, t3));
            total.push(ms(t0, t3));
        }
    }
    println!(
        "median: forward {:.0} ms  backward {:.0} ms  clip+adamw {:.0} ms  total {:.0} ms/step",
        median(&mut fwd),
        median(&mut bwd),
        median(&mut upd),
        median(&mut total)
    );
    Ok(())
}
