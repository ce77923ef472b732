//! The fused training kernels (`newstag::kernels`) and the fused AdamW step match the
//! compositions of differentiable candle ops they replace, forward and backward.

use candle_core::{Device, Tensor, Var, D};
use newstag::kernels as ops;
use newstag::kernels::{self_attention, Simd};
use newstag::model::bert::{Bert, Dropout, Mode};
use newstag::model::config::{Activation, BertConfig};
use newstag::model::params::ParamStore;
use newstag::train::optim::{clip_grad_norm, AdamW, AdamWConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;

fn random(rng: &mut StdRng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (values(a), values(b));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest difference relative to the largest magnitude of the reference.
fn rel_diff(got: &Tensor, want: &Tensor) -> f32 {
    let scale = values(want).iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs_diff(got, want) / scale.max(1e-12)
}

/// Runs `f` on fresh variables made from `inputs` and back-propagates a random weighted sum of
/// its output; returns the output and the gradient of every input.
fn forward_backward(
    inputs: &[Tensor],
    weights_seed: u64,
    f: impl Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts);
    let mut rng = StdRng::seed_from_u64(weights_seed);
    let r = random(&mut rng, y.dims(), -1.0, 1.0);
    let loss = y.mul(&r).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = ts
        .iter()
        .map(|t| grads.get(t).expect("a gradient for every input").clone())
        .collect();
    (y, g)
}

fn check(
    name: &str,
    inputs: &[Tensor],
    grads_for: usize,
    fused: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
) {
    let (y1, g1) = forward_backward(inputs, 99, fused);
    let (y2, g2) = forward_backward(inputs, 99, reference);
    let d = max_abs_diff(&y1, &y2);
    assert!(d < 1e-5, "{name}: forward differs by {d}");
    for i in 0..grads_for {
        let r = rel_diff(&g1[i], &g2[i]);
        assert!(r < 1e-4, "{name}: gradient {i} differs by {r} (relative)");
    }
}

const SHAPES: [&[usize]; 5] = [&[3, 5, 32], &[2, 4, 7, 7], &[6, 384], &[2, 3, 1], &[1, 65]];

#[test]
fn layer_norm_matches_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(1);
    for dims in SHAPES {
        let d = *dims.last().unwrap();
        let x = random(&mut rng, dims, -2.0, 2.0).affine(3.0, 0.5).unwrap();
        let w = random(&mut rng, &[d], 0.5, 1.5);
        let b = random(&mut rng, &[d], -0.5, 0.5);
        check(
            &format!("layer_norm {dims:?}"),
            &[x, w, b],
            3,
            |t| ops::layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
            |t| ops::layer_norm_reference(&t[0], &t[1], &t[2], 1e-12).unwrap(),
        );
    }
}

#[test]
fn layer_norm_takes_non_contiguous_input() {
    let mut rng = StdRng::seed_from_u64(2);
    let x = random(&mut rng, &[16, 3, 8], -1.0, 1.0);
    let w = random(&mut rng, &[3], 0.5, 1.5);
    let b = random(&mut rng, &[3], -0.5, 0.5);
    check(
        "layer_norm transposed",
        &[x, w, b],
        3,
        |t| ops::layer_norm(&t[0].transpose(1, 2).unwrap(), &t[1], &t[2], 1e-5).unwrap(),
        |t| ops::layer_norm_reference(&t[0].transpose(1, 2).unwrap(), &t[1], &t[2], 1e-5).unwrap(),
    );
}

#[test]
fn softmax_matches_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(3);
    for dims in SHAPES {
        let x = random(&mut rng, dims, -4.0, 4.0);
        check(
            &format!("softmax {dims:?}"),
            &[x],
            1,
            |t| ops::softmax_last_dim(&t[0]).unwrap(),
            |t| ops::softmax_reference(&t[0]).unwrap(),
        );
    }
}

#[test]
fn masked_softmax_matches_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(4);
    for dims in [[2, 4, 7, 7], [3, 2, 5, 32], [1, 1, 1, 1]] {
        let [b, _, _, k] = dims;
        let x = random(&mut rng, &dims, -10.0, 10.0);
        // Padding at the end of every item but the first, as the encoder's mask bias.
        let mask: Vec<f32> = (0..b)
            .flat_map(|i| (0..k).map(move |j| if j + i < k { 0.0 } else { -1e9 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, k), &Device::Cpu).unwrap();
        let scale = 1.0 / 8f64.sqrt();
        check(
            &format!("masked softmax {dims:?}"),
            std::slice::from_ref(&x),
            1,
            |t| ops::masked_softmax(&t[0], &mask, scale).unwrap(),
            |t| ops::masked_softmax_reference(&t[0], &mask, scale).unwrap(),
        );
        let y = ops::masked_softmax(&x, &mask, scale).unwrap();
        let masked = values(
            &y.broadcast_mul(&mask.ne(0f32).unwrap().to_dtype(y.dtype()).unwrap())
                .unwrap(),
        );
        assert!(masked.iter().all(|&v| v == 0.0), "padding gets exactly 0");
    }
}

#[test]
fn masked_softmax_gives_a_row_the_same_bits_however_much_padding_follows() {
    // Batching pads a window to its batch's longest: its attention must not change in the last bit.
    let mut rng = StdRng::seed_from_u64(9);
    for len in 1..=41 {
        let x = random(&mut rng, &[1, 2, 3, len], -10.0, 10.0);
        let alone = values(&ops::masked_softmax(&x, &padding_mask(1, len), 0.3).unwrap());
        for pad in [1, 7, 8, 9, 30] {
            let padded = x.pad_with_zeros(3, 0, pad).unwrap().contiguous().unwrap();
            let mask: Vec<f32> = (0..len + pad)
                .map(|j| if j < len { 0.0 } else { -1e9 })
                .collect();
            let mask = Tensor::from_vec(mask, (1, 1, 1, len + pad), &Device::Cpu).unwrap();
            let y = ops::masked_softmax(&padded, &mask, 0.3).unwrap();
            let y = values(&y.narrow(3, 0, len).unwrap().contiguous().unwrap());
            assert_eq!(y, alone, "length {len}, padding {pad}");
        }
    }
}

#[test]
fn linear_rows_gives_a_row_the_same_bits_whatever_rows_come_with_it() {
    let mut rng = StdRng::seed_from_u64(10);
    let (x, w, b) = (
        random(&mut rng, &[37, 45], -1.0, 1.0),
        random(&mut rng, &[9, 45], -1.0, 1.0),
        random(&mut rng, &[9], -1.0, 1.0),
    );
    let all = ops::linear_rows(&x, &w, &b).unwrap();
    let want = x
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap();
    assert!(max_abs_diff(&all, &want) < 1e-5);
    for (start, n) in [(0, 1), (5, 2), (36, 1), (10, 20)] {
        let part = ops::linear_rows(&x.narrow(0, start, n).unwrap(), &w, &b).unwrap();
        assert_eq!(values(&part), values(&all.narrow(0, start, n).unwrap()));
    }
}

#[test]
fn per_window_attention_matches_masked_batched_attention() {
    let mut rng = StdRng::seed_from_u64(11);
    let (heads, size, len) = (3, 8, 21);
    let hidden = heads * size;
    let lengths = [21, 5, 1, 13];
    let b = lengths.len();
    let qkv = random(&mut rng, &[b * len, 3 * hidden], -2.0, 2.0);
    let bias = random(&mut rng, &[3 * hidden], -1.0, 1.0);
    // The kernel takes the windows' tokens packed, one window after another.
    let rows: Vec<u32> = lengths
        .iter()
        .enumerate()
        .flat_map(|(w, &n)| (0..n).map(move |t| (w * len + t) as u32))
        .collect();
    let packed = qkv
        .index_select(&Tensor::new(rows.as_slice(), &Device::Cpu).unwrap(), 0)
        .unwrap();
    let got = self_attention(&packed, &bias, &lengths, heads).unwrap();
    assert_eq!(got.dims(), [rows.len(), hidden]);

    // The batched reference: bias, split heads, masked softmax, multiply, merge heads.
    let h = qkv.broadcast_add(&bias).unwrap();
    let part = |i: usize| {
        h.narrow(1, i * hidden, hidden)
            .unwrap()
            .reshape((b, len, heads, size))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (part(0), part(1), part(2));
    let mask: Vec<f32> = lengths
        .iter()
        .flat_map(|&n| (0..len).map(move |j| if j < n { 0.0 } else { -1e9 }))
        .collect();
    let mask = Tensor::from_vec(mask, (b, 1, 1, len), &Device::Cpu).unwrap();
    let scores = q.matmul(&k.t().unwrap()).unwrap();
    let probs = ops::masked_softmax_reference(&scores, &mask, 1.0 / (size as f64).sqrt()).unwrap();
    let want = probs
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b * len, hidden))
        .unwrap();
    let (got_rows, want_rows) = (
        got.to_vec2::<f32>().unwrap(),
        want.to_vec2::<f32>().unwrap(),
    );
    for (g, &row) in got_rows.iter().zip(&rows) {
        let r = &want_rows[row as usize];
        let diff = g
            .iter()
            .zip(r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "padded row {row}: {diff}");
    }
    // A window alone gives the same bits as in the batch (window 1: packed rows 21..26).
    let window = packed.narrow(0, lengths[0], lengths[1]).unwrap();
    let alone = self_attention(&window, &bias, &lengths[1..2], heads).unwrap();
    assert_eq!(
        values(&alone),
        values(&got.narrow(0, lengths[0], lengths[1]).unwrap())
    );
    // Rows that are not the lengths' sum are an error, not a misread.
    assert!(self_attention(&qkv, &bias, &lengths, heads).is_err());
}

#[test]
fn gelu_matches_candle() {
    let mut rng = StdRng::seed_from_u64(5);
    for dims in SHAPES {
        let x = random(&mut rng, dims, -6.0, 6.0);
        check(
            &format!("gelu {dims:?}"),
            &[x],
            1,
            |t| ops::gelu_erf(&t[0]).unwrap(),
            |t| t[0].gelu_erf().unwrap(),
        );
    }
}

#[test]
fn dropout_matches_an_explicit_mask() {
    let mut rng = StdRng::seed_from_u64(6);
    for dims in SHAPES {
        let x = random(&mut rng, dims, -1.0, 1.0);
        check(
            &format!("dropout {dims:?}"),
            &[x],
            1,
            |t| ops::dropout(&t[0], 0.1, 17).unwrap(),
            |t| ops::dropout_reference(&t[0], 0.1, 17).unwrap(),
        );
    }
    let x = Tensor::ones((64, 1000), candle_core::DType::F32, &Device::Cpu).unwrap();
    let y = values(&ops::dropout(&x, 0.25, 3).unwrap());
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((dropped - 0.25).abs() < 0.01, "dropped {dropped}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let again = values(&ops::dropout(&x, 0.25, 3).unwrap());
    assert_eq!(y, again, "the mask is a function of the seed");
    let other = values(&ops::dropout(&x, 0.25, 4).unwrap());
    assert_ne!(y, other);
}

fn padding_mask(b: usize, k: usize) -> Tensor {
    let mask: Vec<f32> = (0..b)
        .flat_map(|i| (0..k).map(move |j| if j + i < k { 0.0 } else { -1e9 }))
        .collect();
    Tensor::from_vec(mask, (b, 1, 1, k), &Device::Cpu).unwrap()
}

#[test]
fn attention_probs_match_softmax_then_dropout() {
    let mut rng = StdRng::seed_from_u64(8);
    for dims in [[2, 4, 7, 7], [3, 2, 5, 32], [1, 3, 3, 3]] {
        let x = random(&mut rng, &dims, -10.0, 10.0);
        let mask = padding_mask(dims[0], dims[3]);
        for p in [0.0, 0.1, 0.5] {
            check(
                &format!("attention probs {dims:?} p={p}"),
                std::slice::from_ref(&x),
                1,
                |t| ops::attention_probs(&t[0], &mask, 0.35, p, 21).unwrap(),
                |t| ops::attention_probs_reference(&t[0], &mask, 0.35, p, 21).unwrap(),
            );
        }
    }
}

#[test]
fn head_splitting_and_merging_match_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(9);
    for (batch, len, heads, size) in [(2, 7, 4, 8), (3, 5, 2, 3), (1, 1, 1, 1)] {
        let h = random(&mut rng, &[batch * len, heads * size], -1.0, 1.0);
        let bias = random(&mut rng, &[heads * size], -1.0, 1.0);
        for transposed in [false, true] {
            check(
                &format!("split heads {batch}x{len}x{heads}x{size} {transposed}"),
                &[h.clone(), bias.clone()],
                2,
                |t| ops::bias_split_heads(&t[0], &t[1], batch, heads, transposed).unwrap(),
                |t| {
                    ops::bias_split_heads_reference(&t[0], &t[1], batch, heads, transposed).unwrap()
                },
            );
        }
        let x = random(&mut rng, &[batch, heads, len, size], -1.0, 1.0);
        check(
            &format!("merge heads {batch}x{len}x{heads}x{size}"),
            &[x],
            1,
            |t| ops::merge_heads(&t[0]).unwrap(),
            |t| ops::merge_heads_reference(&t[0]).unwrap(),
        );
    }
}

#[test]
fn bias_gelu_matches_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(10);
    for dims in SHAPES {
        let h = random(&mut rng, dims, -5.0, 5.0);
        let bias = random(&mut rng, &[*dims.last().unwrap()], -1.0, 1.0);
        check(
            &format!("bias gelu {dims:?}"),
            &[h, bias],
            2,
            |t| ops::bias_gelu(&t[0], &t[1]).unwrap(),
            |t| ops::bias_gelu_reference(&t[0], &t[1]).unwrap(),
        );
    }
}

#[test]
fn bias_dropout_add_matches_the_differentiable_ops() {
    let mut rng = StdRng::seed_from_u64(11);
    for dims in SHAPES {
        let h = random(&mut rng, dims, -1.0, 1.0);
        let bias = random(&mut rng, &[*dims.last().unwrap()], -1.0, 1.0);
        let r = random(&mut rng, dims, -1.0, 1.0);
        for p in [0.0, 0.1] {
            check(
                &format!("bias dropout add {dims:?} p={p}"),
                &[h.clone(), bias.clone(), r.clone()],
                3,
                |t| ops::bias_dropout_add(&t[0], &t[1], &t[2], p, 5).unwrap(),
                |t| ops::bias_dropout_add_reference(&t[0], &t[1], &t[2], p, 5).unwrap(),
            );
        }
    }
}

/// The whole encoder, forward and backward, with dropout: fused kernels against the
/// differentiable-op compositions (the same dropout masks). With GELU on CPU the layers' backward
/// pass is written out (`model::layers::backward`), with and without attention dropout (two
/// backward passes of the attention probabilities); with the tanh GELU they are recorded by
/// candle's autograd, as on a GPU.
#[test]
fn encoder_gradients_match_the_reference_kernels() {
    let mut no_attention_dropout = BertConfig::tiny(50);
    no_attention_dropout.attention_probs_dropout_prob = 0.0;
    let mut tanh_gelu = BertConfig::tiny(50);
    tanh_gelu.hidden_act = Activation::GeluNew;
    for config in [BertConfig::tiny(50), no_attention_dropout, tanh_gelu] {
        encoder_gradients_match(&config);
    }
}

/// With the exact GELU on CPU the layers' parameter gradients come from their written-out backward
/// pass, which candle's `backward` alone does not collect: the path the test above checks runs.
#[test]
fn the_layers_parameter_gradients_come_from_mode_backward() {
    let config = BertConfig::tiny(50);
    let store = ParamStore::fresh(11);
    let bert = Bert::new(&config, store.var_builder(&Device::Cpu).pp("bert")).unwrap();
    let vars = store.vars();
    let query = vars["bert.encoder.layer.0.attention.self.query.weight"].as_tensor();
    let embeddings = vars["bert.embeddings.word_embeddings.weight"].as_tensor();
    let ids = Tensor::new(&[[1u32, 5, 7, 2]], &Device::Cpu).unwrap();
    let (types, mask) = (ids.zeros_like().unwrap(), ids.ones_like().unwrap());
    let loss = |mode: &mut Mode| {
        let out = bert.forward(&ids, &types, &mask, None, mode).unwrap();
        out.sqr().unwrap().sum_all().unwrap()
    };
    let mut mode = Mode::train(Dropout::new(&config, 1));
    let plain = loss(&mut mode).backward().unwrap();
    assert!(plain.get(embeddings).is_some());
    assert!(plain.get(query).is_none());
    let mut mode = Mode::train(Dropout::new(&config, 1));
    let total = loss(&mut mode);
    let all = mode.backward(&total).unwrap();
    assert!(all.get(embeddings).is_some() && all.get(query).is_some());
}

fn encoder_gradients_match(config: &BertConfig) {
    let store = ParamStore::fresh(11);
    let bert = Bert::new(config, store.var_builder(&Device::Cpu).pp("bert")).unwrap();
    let vars = store.vars();
    let mut rng = StdRng::seed_from_u64(12);
    let (b, len) = (3, 9);
    let ids: Vec<u32> = (0..b * len).map(|_| rng.random_range(0..50)).collect();
    let ids = Tensor::from_vec(ids, (b, len), &Device::Cpu).unwrap();
    let type_ids = ids.zeros_like().unwrap();
    let mask: Vec<u32> = (0..b)
        .flat_map(|i| (0..len).map(move |j| u32::from(j + 2 * i < len)))
        .collect();
    let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
    let r = random(&mut rng, &[b, len, config.hidden_size], -1.0, 1.0);
    let run = |reference: bool| {
        let dropout = Dropout::new(config, 5);
        let dropout = if reference {
            dropout.with_reference_kernels()
        } else {
            dropout
        };
        let mut mode = Mode::train(dropout);
        let out = bert
            .forward(&ids, &type_ids, &mask, None, &mut mode)
            .unwrap();
        let loss = out.mul(&r).unwrap().sum_all().unwrap();
        let grads = mode.backward(&loss).unwrap();
        (out, grads)
    };
    let (y1, g1) = run(false);
    let (y2, g2) = run(true);
    let d = max_abs_diff(&y1, &y2);
    assert!(d < 1e-5, "encoder output differs by {d}");
    for (name, var) in &vars {
        let (a, b) = (g1.get(var.as_tensor()), g2.get(var.as_tensor()));
        let (a, b) = (a.expect(name), b.expect(name));
        if name.ends_with("key.bias") {
            // Softmax ignores a shift common to a row: this gradient is 0 up to rounding.
            assert!(max_abs_diff(a, b) < 1e-6, "{name}");
            continue;
        }
        let r = rel_diff(a, b);
        assert!(
            r < 1e-4,
            "{:?}: gradient of {name} differs by {r} (relative)",
            config.hidden_act
        );
    }
}

fn adamw_vars(seed: u64) -> BTreeMap<String, Var> {
    let mut rng = StdRng::seed_from_u64(seed);
    [
        ("a.weight", vec![7, 5]),
        ("a.bias", vec![5]),
        ("a.LayerNorm.weight", vec![5]),
        ("b.weight", vec![40_000]),
    ]
    .into_iter()
    .map(|(n, d)| {
        let t = random(&mut rng, &d, -1.0, 1.0);
        (n.to_string(), Var::from_tensor(&t).unwrap())
    })
    .collect()
}

/// One step of `opt` on the gradient of `sum(var * r)` (that is, `r`) for random `r`.
fn adamw_step(opt: &mut AdamW, vars: &BTreeMap<String, Var>, step: u64, lr: f64) {
    let mut rng = StdRng::seed_from_u64(1000 + step);
    let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
    for var in vars.values() {
        let r = (random(&mut rng, var.dims(), -1.0, 1.0) * (step as f64 + 1.0)).unwrap();
        loss = (loss + var.as_tensor().mul(&r).unwrap().sum_all().unwrap()).unwrap();
    }
    let mut grads = loss.backward().unwrap();
    clip_grad_norm(vars, &mut grads, 50.0).unwrap();
    opt.step(&grads, lr).unwrap();
}

#[test]
fn fused_adamw_matches_the_tensor_op_formula() {
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        ..Default::default()
    };
    let (fused_vars, ref_vars) = (adamw_vars(1), adamw_vars(1));
    let mut fused = AdamW::new(fused_vars.clone(), config).unwrap();
    let mut reference = AdamW::new(ref_vars.clone(), config).unwrap();
    reference.use_tensor_ops().unwrap();
    for step in 0..5 {
        let lr = 1e-2 * (step + 1) as f64;
        adamw_step(&mut fused, &fused_vars, step, lr);
        adamw_step(&mut reference, &ref_vars, step, lr);
    }
    for (name, var) in &fused_vars {
        let d = max_abs_diff(var.as_tensor(), ref_vars[name].as_tensor());
        assert!(d < 1e-6, "{name} differs by {d}");
    }
    let (s1, s2) = (fused.state(), reference.state());
    assert_eq!(s1.len(), 8);
    for (key, t) in &s1 {
        let d = max_abs_diff(t, &s2[key]);
        assert!(d < 1e-6, "state {key} differs by {d}");
    }
}

#[test]
fn fused_adamw_resumes_from_its_state_exactly() {
    let config = AdamWConfig::default();
    let (vars, resumed_vars) = (adamw_vars(2), adamw_vars(2));
    let mut opt = AdamW::new(vars.clone(), config).unwrap();
    let mut other = AdamW::new(resumed_vars.clone(), config).unwrap();
    for step in 0..3 {
        adamw_step(&mut opt, &vars, step, 1e-3);
        adamw_step(&mut other, &resumed_vars, step, 1e-3);
    }
    let mut resumed = AdamW::new(resumed_vars.clone(), config).unwrap();
    resumed.restore(&other.state(), other.steps()).unwrap();
    for step in 3..5 {
        adamw_step(&mut opt, &vars, step, 1e-3);
        adamw_step(&mut resumed, &resumed_vars, step, 1e-3);
    }
    for (name, var) in &vars {
        assert_eq!(
            values(var.as_tensor()),
            values(resumed_vars[name].as_tensor()),
            "{name}"
        );
    }
}

#[test]
fn softmax_rows_sum_to_one() {
    let mut rng = StdRng::seed_from_u64(7);
    let x = random(&mut rng, &[4, 33], -30.0, 30.0);
    let sums = values(&ops::softmax_last_dim(&x).unwrap().sum(D::Minus1).unwrap());
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sums:?}");
}

#[test]
fn the_simd_loops_give_the_portable_bits() {
    // Every instruction set this CPU runs against the portable build: the same IEEE operations
    // in the same order, hence the same bits; the dispatch picks the widest.
    assert!(Simd::best().runs_here());
    assert!(Simd::Portable.runs_here());
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let expected = if has!("avx512f") {
            Simd::Avx512
        } else if has!("avx2") && has!("fma") {
            Simd::Avx2
        } else {
            Simd::Portable
        };
        assert_eq!(Simd::best(), expected);
    }
    let here: Vec<Simd> = Simd::ALL.into_iter().filter(|s| s.runs_here()).collect();
    let mut rng = StdRng::seed_from_u64(23);
    for best in here {
        for dims in [&[7, 384][..], &[3, 5, 33], &[2, 1537]] {
            let x = random(&mut rng, dims, -6.0, 6.0);
            let d = *dims.last().unwrap();
            let (w, b) = (
                random(&mut rng, &[d], 0.5, 1.5),
                random(&mut rng, &[d], -1.0, 1.0),
            );
            let norm = |simd| values(&ops::layer_norm_on(&x, &w, &b, 1e-12, simd).unwrap());
            assert_eq!(norm(best), norm(Simd::Portable), "layer norm {dims:?}");
            let gelu = |simd| values(&ops::bias_gelu_on(&x, &b, simd).unwrap());
            assert_eq!(gelu(best), gelu(Simd::Portable), "bias gelu {dims:?}");
        }
        let (heads, size) = (4, 16);
        let lengths = [37, 9, 1, 20];
        let qkv = random(
            &mut rng,
            &[lengths.iter().sum(), 3 * heads * size],
            -2.0,
            2.0,
        );
        let bias = random(&mut rng, &[3 * heads * size], -1.0, 1.0);
        let attend =
            |simd| values(&ops::self_attention_on(&qkv, &bias, &lengths, heads, simd).unwrap());
        assert_eq!(attend(best), attend(Simd::Portable), "self-attention");
    }
}
