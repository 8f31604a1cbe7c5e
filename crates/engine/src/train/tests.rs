//! Tests of the training loop: gradients against finite differences, resume, checkpoints.

use super::*;
use crate::config::{MethodKind, TrainConfig};
use crate::methods;
use crate::model::DecoderModel;
use crate::ops::tests::rand_vec;
use crate::ops::Ops;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use whetstone_data::Tokenized;
use whetstone_formats::{ModelConfig, Weights};

/// A random two-layer Llama-layout model (qkv biases on, to exercise them).
pub fn tiny_model(dtype: DType, seed: u64) -> DecoderModel {
    tiny_model_via(dtype, dtype, seed)
}

/// [`tiny_model`] in `dtype` with weights rounded through `via` first (the same
/// bf16-representable weights in an f32 and a bf16 model).
pub fn tiny_model_via(dtype: DType, via: DType, seed: u64) -> DecoderModel {
    let cfg = serde_json::json!({
        "model_type": "qwen2", "vocab_size": 40, "hidden_size": 16,
        "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "max_position_embeddings": 64
    });
    let config = ModelConfig::from_hf_value(&cfg, Path::new("tiny/config.json")).unwrap();
    let dev = Device::Cpu;
    let mut tensors = HashMap::new();
    let mut k = seed;
    let mut put = |name: String, shape: &[usize], scale: f64, offset: f64| {
        k += 1;
        let n: usize = shape.iter().product();
        let v: Vec<f64> = rand_vec(n, k).iter().map(|x| offset + scale * x).collect();
        let t = Tensor::from_vec(v, shape, &dev)
            .unwrap()
            .to_dtype(via)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        tensors.insert(name, t);
    };
    put("model.embed_tokens.weight".into(), &[40, 16], 0.5, 0.0);
    put("model.norm.weight".into(), &[16], 0.2, 1.0);
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), &[16], 0.2, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[16],
            0.2,
            1.0,
        );
        for (n, o, i) in [("q", 16, 16), ("k", 8, 16), ("v", 8, 16), ("o", 16, 16)] {
            put(format!("{p}.self_attn.{n}_proj.weight"), &[o, i], 0.3, 0.0);
            if n != "o" {
                put(format!("{p}.self_attn.{n}_proj.bias"), &[o], 0.1, 0.0);
            }
        }
        put(format!("{p}.mlp.gate_proj.weight"), &[24, 16], 0.3, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[24, 16], 0.3, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[16, 24], 0.3, 0.0);
    }
    DecoderModel::new(&config, Weights::from_map("tiny", tensors), dtype, &dev).unwrap()
}

/// Sequences where the second half repeats the first: learnable, with a masked prompt.
fn copy_task(n: usize, seed: u64) -> Vec<Tokenized> {
    (0..n)
        .map(|i| {
            let half: Vec<u32> = rand_vec(5, seed + i as u64)
                .iter()
                .map(|x| (((x + 1.0) * 10.0) as u32) % 38 + 2)
                .collect();
            let mut ids = vec![1];
            ids.extend(&half);
            ids.extend(&half);
            let trained = (0..ids.len()).map(|j| j > half.len()).collect();
            Tokenized::new(ids, trained)
        })
        .collect()
}

fn cfg(method: MethodKind) -> TrainConfig {
    let mut c = TrainConfig::for_method(method);
    c.batch_size = 4;
    c.max_steps = Some(6);
    c.eval_every = 3;
    c.save_every = 3;
    c.sample_tokens = 0;
    c.lr = Some(1e-2);
    c.seq_len = 32;
    c.methods.lora.dropout = 0.1;
    c.methods.adapter.bottleneck = Some(4);
    c.methods.prompt.n_virtual_tokens = 4;
    c
}

fn run(
    model: &mut DecoderModel,
    c: &TrainConfig,
    dir: &Path,
    resume: Option<PathBuf>,
    cancel_at: Option<u64>,
) -> (Summary, Vec<TrainEvent>) {
    let cancel = Arc::new(AtomicBool::new(false));
    let spec = TrainSpec {
        config: c.clone(),
        data: TrainData {
            train: copy_task(12, 1),
            eval: copy_task(4, 100),
        },
        run_dir: dir.to_path_buf(),
        resume_from: resume,
        cancel: cancel.clone(),
        tokenizer: None,
        dump_first_grads: None,
    };
    let mut events = vec![];
    let s = train(model, spec, "tiny", |e| {
        if let (TrainEvent::Step { step, .. }, Some(at)) = (&e, cancel_at) {
            if *step == at {
                cancel.store(true, Ordering::Relaxed);
            }
        }
        events.push(e);
    })
    .unwrap();
    (s, events)
}

fn step_losses(events: &[TrainEvent]) -> Vec<(u64, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { step, loss, .. } => Some((*step, *loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn method_gradients_match_finite_differences() {
    // DoRA is left out on purpose: like PEFT it detaches the weight norm, so its A and B
    // gradients are not those of the function (tests/python checks them against PEFT's).
    for method in [
        MethodKind::Lora,
        MethodKind::Ia3,
        MethodKind::Bitfit,
        MethodKind::PromptTuning,
        MethodKind::Adapter,
        MethodKind::Qlora,
        MethodKind::PrefixTuning,
        MethodKind::PTuningV2,
    ] {
        method_gradient_check(method);
    }
}

fn method_gradient_check(method: MethodKind) {
    let mut model = tiny_model(DType::F64, 3);
    let mut c = cfg(method);
    c.methods.lora.dropout = 0.0;
    c.methods.lora.targets = vec!["q_proj".into(), "v_proj".into(), "down_proj".into()];
    c.methods.prompt.n_virtual_tokens = 3;
    c.methods.adapter.bottleneck = Some(4);
    let params = methods::apply(&mut model, &c.method_args()).unwrap();
    assert!(!params.is_empty(), "{method:?}");
    // Move every trainable value off its init (LoRA's B = 0 would zero A's gradient,
    // (IA)3's ones would hide a missing scale).
    for (i, p) in params.iter().enumerate() {
        let v: Vec<f64> = rand_vec(p.var.elem_count(), 50 + i as u64);
        p.var
            .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let data = copy_task(3, 7);
    let rows: Vec<&Tokenized> = data.iter().collect();
    let batch = make_batch(&rows, &Device::Cpu).unwrap();
    let denom = batch.n_targets as f64;
    let mut acc = vec![None; params.len()];
    forward_backward(&model, &params, &Sft, &batch, denom, false, &mut acc).unwrap();
    let loss = |m: &DecoderModel| -> f64 {
        let h = m
            .hidden_states(&batch.input, 0, None, Ops::Differentiable)
            .unwrap();
        Sft.loss_sum(m, &h, &batch)
            .unwrap()
            .loss
            .to_scalar::<f64>()
            .unwrap()
            / denom
    };
    let h = 1e-6;
    let mut worst = 0f64;
    for (i, p) in params.iter().enumerate() {
        let g = acc[i]
            .as_ref()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let x0 = p.var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for j in (0..x0.len()).step_by(7) {
            let set = |d: f64| {
                let mut x = x0.clone();
                x[j] += d;
                p.var
                    .set(&Tensor::from_vec(x, p.var.shape(), &Device::Cpu).unwrap())
                    .unwrap();
            };
            set(h);
            let up = loss(&model);
            set(-h);
            let down = loss(&model);
            set(0.0);
            let fd = (up - down) / (2.0 * h);
            worst = worst.max((fd - g[j]).abs() / (1.0 + fd.abs()));
        }
    }
    assert!(worst < 1e-6, "{method:?}: worst relative error {worst:e}");
}

#[test]
fn bf16_gradients_agree_with_f32() {
    // The same (bf16-representable) weights and batch in both dtypes. bf16 rounds every
    // intermediate result to u = 2^-8 ≈ 0.39 %; on the path from a parameter to the loss
    // and back there are about S = 60 of them in this 2-layer model (norms, projections,
    // rope, scores, attention output, residuals, MLP, head, and as many in backward).
    // Independent roundings grow like √S·u ≈ 3 %: the bounds are twice that for the mean
    // over a method's tensors and four times for its worst (a small tensor averages over
    // few elements), and 1 % for the loss. They follow from the format, not from one
    // machine (measured, identical on gemm's AVX2 and AVX-512 paths: means 1.0–3.6 %,
    // worst 7.1 %; docs/TESTING.md).
    let rounding_walk = (60f32).sqrt() * (2f32).powi(-8);
    let data = copy_task(4, 7);
    let rows: Vec<&Tokenized> = data.iter().collect();
    let batch = make_batch(&rows, &Device::Cpu).unwrap();
    let denom = batch.n_targets as f64;
    for method in [
        MethodKind::Lora,
        MethodKind::Qlora,
        MethodKind::Dora,
        MethodKind::Full,
        MethodKind::Adapter,
        MethodKind::PrefixTuning,
    ] {
        let mut c = cfg(method);
        c.methods.lora.dropout = 0.0;
        let mut out = vec![];
        for dtype in [DType::F32, DType::BF16] {
            let mut model = tiny_model_via(dtype, DType::BF16, 3);
            let params = methods::apply(&mut model, &c.method_args()).unwrap();
            for (i, p) in params.iter().enumerate() {
                let v: Vec<f32> = rand_vec(p.var.elem_count(), 50 + i as u64)
                    .iter()
                    .map(|&x| 0.3 * x as f32)
                    .collect();
                let t = Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap();
                let t = t.to_dtype(DType::BF16).unwrap().to_dtype(dtype).unwrap();
                p.var.set(&t).unwrap();
            }
            model.mode.set_training(true);
            let mut acc = vec![None; params.len()];
            let loss = forward_backward(&model, &params, &Sft, &batch, denom, false, &mut acc)
                .unwrap()
                .0;
            let grads: Vec<Tensor> = acc.into_iter().map(|g| g.unwrap()).collect();
            assert!(grads.iter().all(|g| g.dtype() == DType::F32), "{method:?}");
            out.push((loss, grads));
        }
        let ((l32, g32), (l16, g16)) = (&out[0], &out[1]);
        assert!(
            (l32 - l16).abs() < 0.01 * l32,
            "{method:?}: loss {l32} vs {l16}"
        );
        let norm = |t: &Tensor| -> f32 {
            let sq = t.sqr().unwrap().sum_all().unwrap();
            sq.to_scalar::<f32>().unwrap().sqrt()
        };
        let rel: Vec<f32> = g32
            .iter()
            .zip(g16)
            .map(|(a, b)| norm(&(b - a).unwrap()) / norm(a).max(1e-12))
            .collect();
        let mean = rel.iter().sum::<f32>() / rel.len() as f32;
        let worst = rel.iter().copied().fold(0f32, f32::max);
        println!(
            "{method:?}: bf16 loss {:.2e} relative, gradients mean {mean:.4} worst {worst:.4}",
            (l32 - l16).abs() / l32
        );
        assert!(
            mean < 2.0 * rounding_walk && worst < 4.0 * rounding_walk,
            "{method:?}: gradients differ by {mean} on average, {worst} at worst"
        );
    }
}

#[test]
fn checkpointing_gives_the_same_gradients_and_dropout() {
    let c = cfg(MethodKind::Lora);
    let data = copy_task(4, 9);
    let rows: Vec<&Tokenized> = data.iter().collect();
    let mut grads = vec![];
    for checkpointing in [false, true] {
        let mut model = tiny_model(DType::F64, 4);
        let params = methods::apply(&mut model, &c.method_args()).unwrap();
        for (i, p) in params.iter().enumerate() {
            let v = rand_vec(p.var.elem_count(), 70 + i as u64);
            p.var
                .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        model.mode.set_training(true);
        model.mode.set_rng_state(11);
        let batch = make_batch(&rows, &Device::Cpu).unwrap();
        let mut acc = vec![None; params.len()];
        let (l, metrics) =
            forward_backward(&model, &params, &Sft, &batch, 10.0, checkpointing, &mut acc).unwrap();
        // the objective's metric: a count of right guesses among the trained positions
        let hits = metrics["token_accuracy"];
        assert!(hits >= 0.0 && hits <= batch.n_targets as f64 && hits.fract() == 0.0);
        grads.push((l, acc, model.mode.rng_state(), hits));
    }
    let (a, b) = (&grads[0], &grads[1]);
    assert!((a.0 - b.0).abs() < 1e-12);
    assert_eq!(a.3, b.3, "recomputation must not change the metrics");
    assert_eq!(a.2, b.2, "the dropout stream must end in the same state");
    for (x, y) in a.1.iter().zip(&b.1) {
        let d = (x.as_ref().unwrap() - y.as_ref().unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_keepdim(0)
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "gradient differs by {d:e}");
    }
}

#[test]
fn full_checkpointing_reaches_the_embeddings() {
    let mut c = cfg(MethodKind::Full);
    c.gradient_checkpointing = true;
    let data = copy_task(2, 3);
    let rows: Vec<&Tokenized> = data.iter().collect();
    let mut out = vec![];
    for checkpointing in [false, true] {
        let mut model = tiny_model(DType::F64, 5);
        let params = methods::apply(&mut model, &c.method_args()).unwrap();
        let batch = make_batch(&rows, &Device::Cpu).unwrap();
        let mut acc = vec![None; params.len()];
        forward_backward(&model, &params, &Sft, &batch, 5.0, checkpointing, &mut acc).unwrap();
        out.push(
            acc[0]
                .clone()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
        );
    }
    assert!((out[0] - out[1]).abs() < 1e-10, "{out:?}");
}

#[test]
fn every_method_lowers_the_loss_and_freeze_trains_only_the_last_layers() {
    lowers_the_loss(DType::F32);
}

#[test]
fn every_method_lowers_the_loss_in_bf16() {
    lowers_the_loss(DType::BF16);
}

fn lowers_the_loss(dtype: DType) {
    for method in MethodKind::ALL {
        let tmp = tempfile::tempdir().unwrap();
        let mut model = tiny_model(dtype, 6);
        let mut c = cfg(method);
        c.max_steps = Some(15);
        c.methods.freeze.trainable_layers = 1;
        // scaling vectors and biases are few parameters: they need a larger step
        if matches!(
            method,
            MethodKind::Ia3 | MethodKind::Bitfit | MethodKind::PromptTuning
        ) {
            c.lr = Some(1e-1);
        }
        if method == MethodKind::PrefixTuning {
            c.lr = Some(3e-2);
        }
        if method == MethodKind::PTuningV2 {
            c.lr = Some(1e-1);
        }
        let (s, events) = run(&mut model, &c, tmp.path(), None, None);
        let first = s.first_eval_loss.unwrap();
        let best = s.best_eval_loss.unwrap();
        // (IA)3 and BitFit can only rescale / shift: a smaller but clear drop
        let bar = match method {
            MethodKind::Ia3
            | MethodKind::Bitfit
            | MethodKind::PromptTuning
            | MethodKind::PrefixTuning
            | MethodKind::PTuningV2 => 0.97,
            _ => 0.9,
        };
        assert!(
            best < first * bar,
            "{method:?} {dtype:?}: eval {first} -> {best}"
        );
        if method == MethodKind::Freeze {
            // layer 1 (the last) + final norm: 7 linears' weights + biases + 2 norms + norm
            let per_layer = 16 * 16 * 2 + 8 * 16 * 2 + 16 + 8 + 8 + 24 * 16 * 3 + 16 * 2;
            assert_eq!(s.trainable_params, per_layer + 16);
        }
        assert!(matches!(
            events.last(),
            Some(TrainEvent::Finished {
                status: RunStatus::Completed,
                ..
            })
        ));
        assert!(tmp.path().join("checkpoints/last/state.json").exists());
        assert!(tmp.path().join("checkpoints/best/state.json").exists());
    }
}

#[test]
fn every_method_resumes_with_identical_losses() {
    for method in MethodKind::ALL {
        resume_check(method, DType::F32);
    }
}

#[test]
fn every_method_resumes_with_identical_losses_in_bf16() {
    // exact only because checkpoints hold the f32 masters, not the bf16 copies
    for method in MethodKind::ALL {
        resume_check(method, DType::BF16);
    }
}

fn resume_check(method: MethodKind, dtype: DType) {
    let c = cfg(method);
    let tmp = tempfile::tempdir().unwrap();
    let (_, whole) = run(
        &mut tiny_model(dtype, 8),
        &c,
        &tmp.path().join("a"),
        None,
        None,
    );
    let again = run(
        &mut tiny_model(dtype, 8),
        &c,
        &tmp.path().join("b"),
        None,
        None,
    )
    .1;
    assert_eq!(
        step_losses(&whole),
        step_losses(&again),
        "{method:?} {dtype:?}: same seed, same curve"
    );

    let dir = tmp.path().join("c");
    let (s, first) = run(&mut tiny_model(dtype, 8), &c, &dir, None, Some(2));
    assert_eq!(s.steps_done, 2);
    assert!(matches!(
        first.last(),
        Some(TrainEvent::Finished {
            status: RunStatus::Cancelled,
            ..
        })
    ));
    let ckpt = find_checkpoint(&dir).unwrap();
    let (s, rest) = run(&mut tiny_model(dtype, 8), &c, &dir, Some(ckpt), None);
    assert_eq!(s.steps_done, 6);
    let mut joined = step_losses(&first);
    joined.extend(step_losses(&rest));
    assert_eq!(joined, step_losses(&whole), "{method:?} {dtype:?}");
}

#[test]
fn lora_plus_moves_b_lr_ratio_times_faster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(MethodKind::LoraPlus);
    c.max_steps = Some(1);
    c.warmup_ratio = 0.0;
    c.lr = Some(1e-3);
    c.methods.lora_plus.lr_ratio = 16.0;
    c.max_grad_norm = 0.0;
    run(&mut tiny_model(DType::F32, 12), &c, tmp.path(), None, None);
    let w = candle_core::safetensors::load(
        tmp.path()
            .join("checkpoints/last/adapter_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let max_abs = |k: &str| -> f32 {
        w[k].abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    // Adam's first step moves every parameter with a gradient by ±lr: B by 16 × 1e-3
    let b = max_abs("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
    assert!((b - 16e-3).abs() < 1e-4, "{b}");
    assert!(tmp
        .path()
        .join("checkpoints/last/adapter_config.json")
        .exists());
}

#[test]
fn a_non_finite_loss_stops_the_run_before_the_update() {
    let tmp = tempfile::tempdir().unwrap();
    let mut model = tiny_model(DType::F32, 9);
    let nan = (model.norm.ones_like().unwrap() * f64::NAN).unwrap();
    model.norm = nan;
    let (s, events) = run(&mut model, &cfg(MethodKind::Lora), tmp.path(), None, None);
    assert_eq!(s.steps_done, 0);
    assert!(
        s.message
            .as_deref()
            .unwrap_or("")
            .contains("non-finite at step 1"),
        "{:?}",
        s.message
    );
    assert!(matches!(
        events.last(),
        Some(TrainEvent::Finished {
            status: RunStatus::Diverged,
            ..
        })
    ));
    assert!(
        find_checkpoint(tmp.path()).is_none(),
        "nothing after the last good state is saved"
    );
}

#[test]
fn packing_fills_rows_to_seq_len() {
    let rows = pack(&copy_task(10, 2), 16);
    assert!(rows[..rows.len() - 1].iter().all(|r| r.ids.len() == 17));
    let total: usize = rows.iter().map(|r| r.ids.len()).sum();
    assert_eq!(total, 10 * 11);
}
