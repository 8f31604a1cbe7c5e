//! Model soups (Wortsman et al., 2022): one model whose change to the base is a weighted
//! mean of several fine-tunes' changes to that same base.
//!
//! - LoRA adapters: the mean must be taken of the products `s·B·A`, not of `A` and `B`
//!   separately (`mean(B)·mean(A)` is a different matrix). It is stored exactly as one LoRA
//!   of the summed rank: `A = [A₁; …; A_N]` stacked by rows and `B = [w₁s₁B₁, …, w_Ns_NB_N]`
//!   by columns, so `B·A = Σ wᵢsᵢBᵢAᵢ`, with scale 1 (`lora_alpha = r`). It is still a plain
//!   LoRA: PEFT, llama.cpp and merging read it as any other.
//! - Methods whose change is linear in what they train (Full, Freeze, BitFit: the weights;
//!   (IA)3: `W·diag(l)`): the weighted mean of the trained tensors themselves.

use crate::methods::linears_mut;
use crate::model::DecoderModel;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// A LoRA soup's tensors (PEFT names), its rank and the module names it covers.
#[derive(Debug)]
pub struct LoraSoup {
    pub tensors: Vec<(String, Tensor)>,
    /// Every module's rank (= `lora_alpha`, so the scale is 1).
    pub rank: usize,
    /// Short module names (`q_proj`, ...), PEFT's `target_modules`.
    pub targets: Vec<String>,
}

type Factors = Option<(Tensor, Tensor, f64)>;

/// One linear of one ingredient: its name, `[out, in]`, its LoRA factors, and whether it
/// carries an adapter of another kind.
type Slot = (&'static str, (usize, usize), Factors, bool);

/// A module some ingredient adapts: its layer, name, shape and every ingredient's factors.
type Module = (usize, &'static str, (usize, usize), Vec<Factors>);

/// The soup `Σ wᵢ·(change of models[i])` of LoRA adapters, each applied to its own copy of
/// one base. Each ingredient's block is padded with zeros to its largest rank over the
/// modules, so every module has the same rank and no `rank_pattern` is needed; a module an
/// ingredient does not adapt contributes zeros.
pub fn lora_soup(models: &[&DecoderModel], weights: &[f64]) -> Result<LoraSoup, String> {
    if models.is_empty() || models.len() != weights.len() {
        return Err("a soup needs one weight per ingredient".into());
    }
    let layers = models[0].layers.len();
    if let Some(i) = models.iter().position(|m| m.layers.len() != layers) {
        return Err(format!(
            "ingredient {} has a different number of layers",
            i + 1
        ));
    }
    // (layer, module name, shape, each ingredient's factors)
    let mut modules: Vec<Module> = vec![];
    let mut max_rank = vec![0usize; models.len()];
    for l in 0..layers {
        let mut per: Vec<Vec<Slot>> = vec![];
        for m in models {
            let mut layer = m.layers[l].clone();
            let mut row = vec![];
            for (name, lin) in linears_mut(&mut layer) {
                let shape = lin.weight.dims2().map_err(|e| e.to_string())?;
                let f = lin.adapter.as_ref().map(|a| a.low_rank());
                row.push((
                    name,
                    shape,
                    f.clone().flatten(),
                    f.is_some_and(|x| x.is_none()),
                ));
            }
            per.push(row);
        }
        for j in 0..per[0].len() {
            let (name, shape) = (per[0][j].0, per[0][j].1);
            let mut parts = vec![];
            for (i, row) in per.iter().enumerate() {
                let (n, s, f, other) = &row[j];
                if *n != name || *s != shape {
                    return Err(format!(
                        "ingredient {}: `model.layers.{l}.{name}` has another shape: not the same base",
                        i + 1
                    ));
                }
                if *other {
                    return Err(format!(
                        "ingredient {}: `model.layers.{l}.{name}` carries an adapter that is not plain LoRA",
                        i + 1
                    ));
                }
                if let Some((a, _, _)) = f {
                    max_rank[i] = max_rank[i].max(a.dim(0).map_err(|e| e.to_string())?);
                }
                parts.push(f.clone());
            }
            if parts.iter().any(|p| p.is_some()) {
                modules.push((l, name, shape, parts));
            }
        }
    }
    if let Some(i) = max_rank.iter().position(|&r| r == 0) {
        return Err(format!("ingredient {} has no LoRA matrices", i + 1));
    }
    let rank: usize = max_rank.iter().sum();
    let mut tensors = vec![];
    let mut targets: Vec<String> = vec![];
    let c = |e: candle_core::Error| e.to_string();
    for (l, name, (out, inp), parts) in modules {
        let (mut a_blocks, mut b_blocks) = (vec![], vec![]);
        for ((part, &w), &r) in parts.iter().zip(weights).zip(&max_rank) {
            let (a, b) = match part {
                Some((a, b, s)) => {
                    let a = a
                        .to_device(&Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F32));
                    let b = b
                        .to_device(&Device::Cpu)
                        .and_then(|t| t.to_dtype(DType::F32));
                    let (a, b) = (a.map_err(c)?, (b.map_err(c)? * (w * s)).map_err(c)?);
                    let pad = r - a.dim(0).map_err(c)?;
                    (
                        a.pad_with_zeros(0, 0, pad).map_err(c)?,
                        b.pad_with_zeros(1, 0, pad).map_err(c)?,
                    )
                }
                None => (
                    Tensor::zeros((r, inp), DType::F32, &Device::Cpu).map_err(c)?,
                    Tensor::zeros((out, r), DType::F32, &Device::Cpu).map_err(c)?,
                ),
            };
            a_blocks.push(a);
            b_blocks.push(b);
        }
        let module = format!("base_model.model.model.layers.{l}.{name}");
        tensors.push((
            format!("{module}.lora_A.weight"),
            Tensor::cat(&a_blocks, 0).map_err(c)?,
        ));
        tensors.push((
            format!("{module}.lora_B.weight"),
            Tensor::cat(&b_blocks, 1).map_err(c)?,
        ));
        let short = name.rsplit('.').next().unwrap_or(name).to_string();
        if !targets.contains(&short) {
            targets.push(short);
        }
    }
    Ok(LoraSoup {
        tensors,
        rank,
        targets,
    })
}

/// `Σ wᵢ·tᵢ` per name over tensor sets that have the same names and shapes (the trained
/// tensors of Full, Freeze, BitFit and (IA)3 runs), in f32.
pub fn mean_tensors(
    sets: &[HashMap<String, Tensor>],
    weights: &[f64],
) -> Result<Vec<(String, Tensor)>, String> {
    if sets.is_empty() || sets.len() != weights.len() {
        return Err("a soup needs one weight per ingredient".into());
    }
    let mut names: Vec<&String> = sets[0].keys().collect();
    names.sort();
    let c = |e: candle_core::Error| e.to_string();
    let mut out = vec![];
    for (i, set) in sets.iter().enumerate().skip(1) {
        if set.len() != names.len() {
            return Err(format!(
                "ingredient {} trained {} tensors, ingredient 1 trained {}: not the same settings",
                i + 1,
                set.len(),
                names.len()
            ));
        }
    }
    for name in names {
        let mut acc: Option<Tensor> = None;
        for (i, (set, &w)) in sets.iter().zip(weights).enumerate() {
            let t = set
                .get(name)
                .ok_or_else(|| format!("ingredient {} has no tensor `{name}`", i + 1))?;
            let t = (t.to_device(&Device::Cpu).map_err(c)?.to_dtype(DType::F32)).map_err(c)?;
            if t.dims() != sets[0][name].dims() {
                return Err(format!(
                    "ingredient {}: `{name}` has shape {:?}, ingredient 1's is {:?}",
                    i + 1,
                    t.dims(),
                    sets[0][name].dims()
                ));
            }
            let t = (t * w).map_err(c)?;
            acc = Some(match acc {
                None => t,
                Some(a) => (a + t).map_err(c)?,
            });
        }
        out.push((name.clone(), acc.expect("at least one ingredient")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest absolute difference of two same-shape tensors.
    fn max_abs(a: Tensor, b: Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn tensor(seed: u64, shape: (usize, usize)) -> Tensor {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A tiny model whose q_proj (and, for `both`, v_proj) carry random LoRA factors of
    /// rank `r` and scale `alpha / r`.
    fn with_lora(seed: u64, r: usize, alpha: f64, both: bool) -> DecoderModel {
        let mut m = crate::train::tests::tiny_model(DType::F32, 7);
        let mut cfg = crate::config::TrainConfig::for_method(crate::config::MethodKind::Lora);
        cfg.methods.lora.r = r;
        cfg.methods.lora.alpha = alpha;
        cfg.methods.lora.targets = if both {
            vec!["q_proj".into(), "v_proj".into()]
        } else {
            vec!["q_proj".into()]
        };
        let params = crate::methods::apply(&mut m, &cfg.method_args()).unwrap();
        for (k, p) in params.iter().enumerate() {
            let shape = p.var.as_tensor().dims2().unwrap();
            p.var.set(&tensor(seed * 100 + k as u64, shape)).unwrap();
        }
        m
    }

    fn delta(m: &DecoderModel, l: usize, name: &str) -> Option<Tensor> {
        let mut layer = m.layers[l].clone();
        let lin = linears_mut(&mut layer)
            .into_iter()
            .find(|(n, _)| *n == name)?
            .1;
        let (a, b, s) = lin.adapter.as_ref()?.low_rank()?;
        Some((b.matmul(&a).unwrap() * s).unwrap())
    }

    #[test]
    fn the_soup_is_the_mean_of_the_products_not_of_the_factors() {
        let m1 = with_lora(1, 2, 4.0, true);
        let m2 = with_lora(5, 4, 2.0, false);
        let m3 = with_lora(9, 2, 2.0, true);
        let soup = lora_soup(&[&m1, &m2, &m3], &[1.0 / 3.0; 3]).unwrap();
        assert_eq!(soup.rank, 8);
        assert_eq!(soup.targets, ["q_proj", "v_proj"]);
        let get = |n: &str| soup.tensors.iter().find(|(k, _)| k == n).unwrap().1.clone();
        for name in ["self_attn.q_proj", "self_attn.v_proj"] {
            let module = format!("base_model.model.model.layers.0.{name}");
            let a = get(&format!("{module}.lora_A.weight"));
            let b = get(&format!("{module}.lora_B.weight"));
            assert_eq!(a.dim(0).unwrap(), 8);
            let product = b.matmul(&a).unwrap();
            let mut want: Option<Tensor> = None;
            for m in [&m1, &m2, &m3] {
                if let Some(d) = delta(m, 0, name) {
                    let d = (d / 3.0).unwrap();
                    want = Some(match want {
                        None => d,
                        Some(w) => (w + d).unwrap(),
                    });
                }
            }
            let diff = max_abs(product, want.unwrap());
            assert!(diff < 1e-5, "{name}: {diff}");
        }
        // the mean of the factors is another matrix (the mistake the soup avoids)
        let factors = |m: &DecoderModel| {
            let mut l = m.layers[0].clone();
            let lin = linears_mut(&mut l).into_iter().next().unwrap().1;
            lin.adapter.as_ref().unwrap().low_rank().unwrap()
        };
        let ((a1, b1, _), (a3, b3, _)) = (factors(&m1), factors(&m3));
        let mean_of_factors = (((b1.clone() + b3.clone()).unwrap() / 2.0).unwrap())
            .matmul(&((a1.clone() + a3.clone()).unwrap() / 2.0).unwrap())
            .unwrap();
        let mean_of_products =
            ((b1.matmul(&a1).unwrap() + b3.matmul(&a3).unwrap()).unwrap() / 2.0).unwrap();
        let gap = max_abs(mean_of_factors, mean_of_products);
        assert!(gap > 1e-2, "{gap}");
    }

    #[test]
    fn a_base_without_lora_or_with_dora_is_refused() {
        let plain = crate::train::tests::tiny_model(DType::F32, 7);
        let m1 = with_lora(1, 2, 4.0, false);
        let e = lora_soup(&[&m1, &plain], &[0.5, 0.5]).unwrap_err();
        assert!(e.contains("ingredient 2 has no LoRA"), "{e}");
    }

    #[test]
    fn mean_tensors_needs_the_same_names_and_shapes() {
        let set = |s: u64| HashMap::from([("w".to_string(), tensor(s, (2, 3)))]);
        let out = mean_tensors(&[set(1), set(2)], &[0.5, 0.5]).unwrap();
        let want = ((tensor(1, (2, 3)) + tensor(2, (2, 3))).unwrap() / 2.0).unwrap();
        let diff = max_abs(out[0].1.clone(), want);
        assert!(diff < 1e-6);
        let other = HashMap::from([("v".to_string(), tensor(1, (2, 3)))]);
        assert!(mean_tensors(&[set(1), other], &[0.5, 0.5])
            .unwrap_err()
            .contains("no tensor `w`"));
        let wide = HashMap::from([("w".to_string(), tensor(1, (2, 4)))]);
        assert!(mean_tensors(&[set(1), wide], &[0.5, 0.5])
            .unwrap_err()
            .contains("shape"));
    }
}
