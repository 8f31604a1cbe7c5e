//! The explicit path against candle's autograd, the reference: same loss, same metrics, same
//! gradients and the same dropout stream, for every method (those the explicit path does
//! not take must fall back, not fail).

use super::*;
use crate::config::{MethodKind, TrainConfig};
use crate::methods;
use crate::ops::tests::rand_vec;
use crate::train::batch::make_batch;
use crate::train::objective::Sft;
use crate::train::step::forward_backward_autograd;
use crate::train::tests::tiny_model;
use whetstone_data::Tokenized;

fn config(method: MethodKind) -> TrainConfig {
    let mut c = TrainConfig::for_method(method);
    c.methods.lora.dropout = 0.1;
    c.methods.lora.targets = crate::targets::LORA_TARGETS
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.methods.adapter.bottleneck = Some(4);
    c.methods.prompt.n_virtual_tokens = 3;
    c
}

fn rows() -> Vec<Tokenized> {
    // uneven lengths: padding, and a sequence longer than one attention block
    [70usize, 9, 33]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let ids: Vec<u32> = rand_vec(len, 40 + i as u64)
                .iter()
                .map(|x| (((x + 1.0) * 19.0) as u32) % 40)
                .collect();
            let trained = (0..len).map(|j| j % 3 != 0).collect();
            Tokenized::new(ids, trained)
        })
        .collect()
}

/// Random values of scale 0.3 for every parameter (seeded by `seed` and its place).
fn randomize(params: &[crate::params::Param], seed: u64) {
    for (i, p) in params.iter().enumerate() {
        let v: Vec<f32> = rand_vec(p.var.elem_count(), seed + i as u64)
            .iter()
            .map(|x| *x as f32 * 0.3)
            .collect();
        p.var
            .set(&Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// `max |a − b| / max |b|`, the error relative to the tensor's scale.
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max) as f64
        / scale as f64
}

#[test]
fn explicit_path_equals_autograd_for_every_method() {
    let data = rows();
    let refs: Vec<&Tokenized> = data.iter().collect();
    let mut explicit = vec![];
    for method in MethodKind::ALL {
        let mut model = tiny_model(DType::F32, 6);
        let params = methods::apply(&mut model, &config(method).method_args()).unwrap();
        // off the init (LoRA's B = 0 would hide A's gradient)
        randomize(&params, 90);
        model.mode.set_training(true);
        let batch = make_batch(&refs, &Device::Cpu).unwrap();
        let denom = batch.n_targets as f64;
        if unsupported(&model, &params, &Sft).is_none() {
            explicit.push(method);
        }
        // the explicit path, with and without checkpointing, then autograd
        let mut runs = vec![];
        for (reference, checkpointing) in [(false, false), (false, true), (true, false)] {
            model.mode.set_rng_state(5);
            let mut acc = vec![None; params.len()];
            let (loss, metrics) = if reference {
                forward_backward_autograd(&model, &params, &Sft, &batch, denom, false, &mut acc)
            } else {
                crate::train::step::forward_backward(
                    &model,
                    &params,
                    &Sft,
                    &batch,
                    denom,
                    checkpointing,
                    &mut acc,
                )
            }
            .unwrap();
            runs.push((loss, metrics, acc, model.mode.rng_state()));
        }
        for got in &runs[..2] {
            same(method, &params, got, &runs[2]);
        }
    }
    for m in [
        MethodKind::Lora,
        MethodKind::LoraPlus,
        MethodKind::Qlora,
        MethodKind::Dora,
        MethodKind::Full,
        MethodKind::Freeze,
        MethodKind::Bitfit,
    ] {
        assert!(explicit.contains(&m), "{m:?} should take the explicit path");
    }
}

type Run = (f64, Metrics, Vec<Option<Tensor>>, u64);

/// One explicit run against the autograd run: loss, metrics, dropout stream, gradients.
fn same(method: MethodKind, params: &[crate::params::Param], got: &Run, want: &Run) {
    {
        assert!(
            ((got.0 - want.0) / want.0).abs() < 1e-5,
            "{method:?}: loss {} vs {}",
            got.0,
            want.0
        );
        assert_eq!(got.1, want.1, "{method:?}: metrics");
        assert_eq!(
            got.3, want.3,
            "{method:?}: the dropout stream must end in the same state"
        );
        for (p, (g, w)) in params.iter().zip(got.2.iter().zip(&want.2)) {
            let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
            let err = relative(g, w);
            assert!(err < 1e-5, "{method:?} {}: gradient error {err:e}", p.name);
        }
    }
}

#[test]
fn explicit_path_equals_autograd_for_the_preference_objectives() {
    use crate::config::{DpoConfig, KtoConfig, OrpoConfig};
    use crate::train::preference::{Dpo, Kto, Orpo};
    let base = rows();
    // two pairs (DPO, ORPO) or two rated answers with their KL sequences (KTO), references
    // away from the policy so every term of the losses is exercised
    let with_pair = |i: usize, j: usize, reference: [f64; 2], desirable: Option<bool>| Tokenized {
        pair: Some(Box::new(base[j].clone())),
        reference: reference.to_vec(),
        desirable,
        ..base[i].clone()
    };
    let pairs = [
        with_pair(0, 1, [-180.0, -40.0], None),
        with_pair(2, 0, [-70.0, -190.0], None),
    ];
    let rated = [
        with_pair(0, 2, [-180.0, -75.0], Some(true)),
        with_pair(2, 1, [-70.0, -35.0], Some(false)),
    ];
    let objectives: [(&dyn Objective, &[Tokenized]); 3] = [
        (
            &Dpo(DpoConfig {
                beta: 0.5,
                label_smoothing: 0.1,
            }),
            &pairs,
        ),
        (
            &Kto(KtoConfig {
                beta: 0.3,
                desirable_weight: 1.0,
                undesirable_weight: 1.5,
            }),
            &rated,
        ),
        (
            &Orpo {
                cfg: OrpoConfig { beta: 0.2 },
                whole_row: false,
            },
            &pairs,
        ),
    ];
    for (objective, data) in objectives {
        let mut model = tiny_model(DType::F32, 6);
        let params = methods::apply(&mut model, &config(MethodKind::Lora).method_args()).unwrap();
        randomize(&params, 70);
        model.mode.set_training(true);
        let refs: Vec<&Tokenized> = data.iter().collect();
        let batch = objective.batch(&refs, &Device::Cpu).unwrap();
        assert!(
            unsupported(&model, &params, objective).is_none(),
            "{}",
            objective.name()
        );
        let denom = objective.terms(&batch) as f64;
        let mut runs = vec![];
        for (reference, checkpointing) in [(false, false), (false, true), (true, false)] {
            model.mode.set_rng_state(5);
            let mut acc = vec![None; params.len()];
            let (loss, metrics) = if reference {
                forward_backward_autograd(
                    &model, &params, objective, &batch, denom, false, &mut acc,
                )
            } else {
                crate::train::step::forward_backward(
                    &model,
                    &params,
                    objective,
                    &batch,
                    denom,
                    checkpointing,
                    &mut acc,
                )
            }
            .unwrap();
            runs.push((loss, metrics, acc));
        }
        let want = &runs[2];
        for got in &runs[..2] {
            let name = objective.name();
            assert!(
                ((got.0 - want.0) / want.0).abs() < 1e-5,
                "{name}: loss {} vs {}",
                got.0,
                want.0
            );
            for (k, v) in &want.1 {
                let g = got.1[k];
                assert!(
                    (g - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{name}: {k} {g} vs {v}"
                );
            }
            for (p, (g, w)) in params.iter().zip(got.2.iter().zip(&want.2)) {
                let err = relative(g.as_ref().unwrap(), w.as_ref().unwrap());
                assert!(err < 1e-5, "{name} {}: gradient error {err:e}", p.name);
            }
        }
    }
    // ORPO over whole rows needs the prompt positions too: autograd
    let model = tiny_model(DType::F32, 6);
    let whole = Orpo {
        cfg: OrpoConfig { beta: 0.2 },
        whole_row: true,
    };
    assert!(unsupported(&model, &[], &whole).is_some());
}
