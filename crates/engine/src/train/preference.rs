//! Preference objectives: DPO, ORPO and KTO.
//!
//! A preference row is a [`Tokenized`] with a `pair`: the rejected answer (DPO, ORPO) or,
//! for KTO, the mismatched sequence (this prompt, another row's answer) its KL reference
//! point is estimated from. A micro-batch holds every row's sequence, then every pair, so
//! one forward pass gives all the sequence log-probabilities; a membership matrix sums the
//! trained tokens' log-probabilities per sequence. The reference model's log-probabilities
//! (DPO, KTO) are computed once, before the method is applied — the base with no adapter,
//! which for Full is the model before training — and stored with the run, so a resumed run
//! compares against the very same numbers. The per-pair arithmetic is in f64.

use super::batch::{make_batch, Batch};
use super::objective::{LossSum, Metrics, Objective};
use crate::config::{DpoConfig, KtoConfig, ObjectiveKind, OrpoConfig};
use crate::model::DecoderModel;
use crate::ops::{self, Ops};
use candle_core::{DType, Device, Error, Result, Tensor};
use whetstone_data::Tokenized;

/// A preference micro-batch's layout.
pub struct PrefBatch {
    /// Rows (pairs, or rated answers): sequences `0..n` are the rows, `n..2n` their pairs.
    pub n: usize,
    /// `[2n, targets]`: 1 where the target belongs to the sequence.
    pub member: Tensor,
    /// Trained tokens per sequence.
    pub counts: Vec<usize>,
    /// The reference log-probability of each sequence (empty without a reference).
    pub reference: Vec<f64>,
    /// KTO: whether each row is desirable.
    pub desirable: Vec<bool>,
    /// ORPO with `train_on_prompt`: every position of the chosen rows and its next token.
    pub whole: Option<(Tensor, Tensor)>,
}

/// The micro-batch of preference `rows`: their sequences, then their pairs, padded right.
pub fn make_pref_batch(rows: &[&Tokenized], device: &Device, whole_chosen: bool) -> Result<Batch> {
    let pairs = rows
        .iter()
        .map(|r| {
            r.pair
                .as_deref()
                .ok_or_else(|| Error::Msg("a preference row has no pair".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let seqs: Vec<&Tokenized> = rows.iter().copied().chain(pairs).collect();
    let mut batch = make_batch(&seqs, device)?;
    let counts: Vec<usize> = seqs
        .iter()
        .map(|s| s.trained.iter().skip(1).filter(|&&t| t).count())
        .collect();
    let nt = batch.n_targets;
    let mut member = vec![0f32; seqs.len() * nt];
    let mut at = 0;
    for (k, &c) in counts.iter().enumerate() {
        member[k * nt + at..k * nt + at + c].fill(1.0);
        at += c;
    }
    let n = rows.len();
    let reference = if rows.iter().all(|r| r.reference.len() == 2) {
        (0..2 * n).map(|k| rows[k % n].reference[k / n]).collect()
    } else {
        vec![]
    };
    let whole = if whole_chosen {
        let t = batch.input.dim(1)?;
        let (mut pos, mut next) = (vec![], vec![]);
        for (b, r) in rows.iter().enumerate() {
            for i in 0..r.ids.len().saturating_sub(1) {
                pos.push((b * t + i) as u32);
                next.push(r.ids[i + 1]);
            }
        }
        let k = pos.len();
        Some((
            Tensor::from_vec(pos, k, device)?,
            Tensor::from_vec(next, k, device)?,
        ))
    } else {
        None
    };
    batch.pref = Some(PrefBatch {
        n,
        member: Tensor::from_vec(member, (seqs.len(), nt), device)?,
        counts,
        reference,
        desirable: rows.iter().map(|r| r.desirable.unwrap_or(true)).collect(),
        whole,
    });
    Ok(batch)
}

fn pref(batch: &Batch) -> Result<&PrefBatch> {
    batch
        .pref
        .as_ref()
        .ok_or_else(|| Error::Msg("a preference objective got a batch without pairs".into()))
}

/// Per-target NLL `[targets]` of positions `rows` (flat `b * t` indices) in `hidden`.
fn target_nll(
    model: &DecoderModel,
    hidden: &Tensor,
    rows: &Tensor,
    targets: &Tensor,
) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let picked = hidden.reshape((b * t, h))?.index_select(rows, 0)?;
    let logits = model.logits(&picked)?;
    let logits = match logits.dtype() {
        DType::F64 | DType::F32 => logits,
        _ => logits.to_dtype(DType::F32)?,
    };
    ops::cross_entropy_rows(&logits, targets)
}

/// Each sequence's summed log-probability `[2n]` (f64), from the per-target NLL.
fn sequence_logps(nll: &Tensor, batch: &Batch) -> Result<Tensor> {
    pref(batch)?
        .member
        .to_dtype(nll.dtype())?
        .matmul(&nll.unsqueeze(1)?)?
        .squeeze(1)?
        .neg()?
        .to_dtype(DType::F64)
}

/// `log(1 + e^x)`, stable for either sign.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

/// `log σ(x)`.
fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    softplus(&x.neg()?)?.neg()
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.detach().to_dtype(DType::F64)?.to_vec1::<f64>()
}

fn metrics(pairs: &[(&str, f64)]) -> Metrics {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// The [`Objective`] of a preference objective whose loss is a function of the answer
/// tokens' NLLs alone (its `loss_of_nll`): on either training path.
macro_rules! nll_objective {
    ($ty:ty, $name:literal) => {
        impl Objective for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn batch(&self, rows: &[&Tokenized], device: &Device) -> Result<Batch> {
                make_pref_batch(rows, device, false)
            }

            fn loss_sum(
                &self,
                model: &DecoderModel,
                hidden: &Tensor,
                batch: &Batch,
            ) -> Result<LossSum> {
                self.loss_of_nll(
                    &target_nll(model, hidden, &batch.rows, &batch.targets)?,
                    batch,
                )
            }

            fn loss_from_nll(&self, nll: &Tensor, batch: &Batch) -> Option<Result<LossSum>> {
                Some(self.loss_of_nll(nll, batch))
            }

            fn nll_is_enough(&self) -> bool {
                true
            }

            fn terms(&self, batch: &Batch) -> usize {
                batch.pref.as_ref().map_or(0, |p| p.n)
            }
        }
    };
}

/// DPO: `-log σ(β[(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])` per pair,
/// with conservative DPO's label smoothing.
pub struct Dpo(pub DpoConfig);

nll_objective!(Dpo, "dpo");

impl Dpo {
    fn loss_of_nll(&self, nll: &Tensor, batch: &Batch) -> Result<LossSum> {
        let pb = pref(batch)?;
        let n = pb.n;
        let lp = sequence_logps(nll, batch)?;
        let reference = Tensor::new(pb.reference.as_slice(), lp.device())?;
        if pb.reference.len() != 2 * n {
            return Err(Error::Msg(
                "DPO needs the reference log-probabilities".into(),
            ));
        }
        let ratio = (&lp - &reference)?;
        let delta = (ratio.narrow(0, 0, n)? - ratio.narrow(0, n, n)?)?;
        let z = (delta * self.0.beta)?;
        let e = self.0.label_smoothing;
        let loss = ((log_sigmoid(&z)? * -(1.0 - e))? - (log_sigmoid(&z.neg()?)? * e)?)?;
        let (lp, ratio) = (host(&lp)?, host(&ratio)?);
        let b = self.0.beta;
        let (mut acc, mut margin, mut rc, mut rr, mut lc, mut lr) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for i in 0..n {
            let (c, r) = (b * ratio[i], b * ratio[n + i]);
            acc += f64::from(c > r);
            margin += c - r;
            rc += c;
            rr += r;
            lc += lp[i];
            lr += lp[n + i];
        }
        Ok(LossSum {
            loss: loss.sum_all()?,
            metrics: metrics(&[
                ("reward_accuracy", acc),
                ("reward_margin", margin),
                ("chosen_reward", rc),
                ("rejected_reward", rr),
                ("chosen_logp", lc),
                ("rejected_logp", lr),
            ]),
        })
    }
}

/// ORPO: the chosen answer's NLL (token mean; the whole row with `train_on_prompt`, as TRL
/// computes it) minus `β · log σ(log odds(y_w) - log odds(y_l))`, the odds from the answers'
/// mean token log-probabilities.
pub struct Orpo {
    pub cfg: OrpoConfig,
    pub whole_row: bool,
}

impl Objective for Orpo {
    fn name(&self) -> &'static str {
        "orpo"
    }

    fn batch(&self, rows: &[&Tokenized], device: &Device) -> Result<Batch> {
        make_pref_batch(rows, device, self.whole_row)
    }

    fn loss_sum(&self, model: &DecoderModel, hidden: &Tensor, batch: &Batch) -> Result<LossSum> {
        let nll = target_nll(model, hidden, &batch.rows, &batch.targets)?;
        let whole = match &pref(batch)?.whole {
            Some((rows, targets)) => {
                let all = target_nll(model, hidden, rows, targets)?;
                Some((all.sum_all()?.to_dtype(DType::F64)? / rows.dim(0)?.max(1) as f64)?)
            }
            None => None,
        };
        self.loss_of_nll(&nll, batch, whole)
    }

    fn loss_from_nll(&self, nll: &Tensor, batch: &Batch) -> Option<Result<LossSum>> {
        // over whole rows, the SFT term needs the prompt positions' NLLs too
        (!self.whole_row).then(|| self.loss_of_nll(nll, batch, None))
    }

    fn nll_is_enough(&self) -> bool {
        !self.whole_row
    }

    fn terms(&self, batch: &Batch) -> usize {
        batch.pref.as_ref().map_or(0, |p| p.n)
    }
}

impl Orpo {
    /// `whole`: the SFT term over the whole chosen rows, when `train_on_prompt` asks for it.
    fn loss_of_nll(&self, nll: &Tensor, batch: &Batch, whole: Option<Tensor>) -> Result<LossSum> {
        let pb = pref(batch)?;
        let n = pb.n;
        let lp = sequence_logps(nll, batch)?;
        let counts: Vec<f64> = pb.counts.iter().map(|&c| c as f64).collect();
        let avg = (&lp / Tensor::new(counts.as_slice(), lp.device())?)?;
        let (ac, ar) = (avg.narrow(0, 0, n)?, avg.narrow(0, n, n)?);
        // log(1 - p) from log p; p < 1 for any finite log-probability
        let log1m = |x: &Tensor| (x.exp()?.neg()? + 1.0)?.log();
        let log_odds = ((&ac - &ar)? - (log1m(&ac)? - log1m(&ar)?)?)?;
        let ratio = log_sigmoid(&log_odds)?;
        let sft = match whole {
            Some(s) => s,
            None => {
                let k: usize = pb.counts[..n].iter().sum();
                (nll.narrow(0, 0, k)?.sum_all()?.to_dtype(DType::F64)? / k.max(1) as f64)?
            }
        };
        let loss = ((&sft * n as f64)? - (ratio.sum_all()? * self.cfg.beta)?)?;
        let (lp_h, avg_h, odds_h) = (host(&lp)?, host(&avg)?, host(&log_odds)?);
        let b = self.cfg.beta;
        let mut m = metrics(&[
            ("nll", sft.to_scalar::<f64>()? * n as f64),
            ("log_odds_ratio", odds_h.iter().sum()),
            ("reward_accuracy", 0.0),
            ("reward_margin", 0.0),
            ("chosen_reward", 0.0),
            ("rejected_reward", 0.0),
            ("chosen_logp", lp_h[..n].iter().sum()),
            ("rejected_logp", lp_h[n..].iter().sum()),
        ]);
        for i in 0..n {
            let (c, r) = (b * avg_h[i], b * avg_h[n + i]);
            *m.get_mut("reward_accuracy").unwrap() += f64::from(c > r);
            *m.get_mut("reward_margin").unwrap() += c - r;
            *m.get_mut("chosen_reward").unwrap() += c;
            *m.get_mut("rejected_reward").unwrap() += r;
        }
        Ok(LossSum { loss, metrics: m })
    }
}

/// KTO: desirable answers `w_d (1 - σ(β (r - z)))`, undesirable `w_u (1 - σ(β (z - r)))`,
/// with `r` the answer's log-ratio to the reference and `z` the batch's KL estimate from the
/// mismatched pairs (mean log-ratio, at least 0, not differentiated), as TRL computes it.
pub struct Kto(pub KtoConfig);

nll_objective!(Kto, "kto");

impl Kto {
    fn loss_of_nll(&self, nll: &Tensor, batch: &Batch) -> Result<LossSum> {
        let pb = pref(batch)?;
        let n = pb.n;
        if pb.reference.len() != 2 * n {
            return Err(Error::Msg(
                "KTO needs the reference log-probabilities".into(),
            ));
        }
        let lp = sequence_logps(nll, batch)?;
        let ratio = (&lp - Tensor::new(pb.reference.as_slice(), lp.device())?)?;
        let ratio_h = host(&ratio)?;
        let kl = (ratio_h[n..].iter().sum::<f64>() / n as f64).max(0.0);
        let sign: Vec<f64> = pb
            .desirable
            .iter()
            .map(|&d| if d { 1.0 } else { -1.0 })
            .collect();
        let weight: Vec<f64> = pb
            .desirable
            .iter()
            .map(|&d| {
                if d {
                    self.0.desirable_weight
                } else {
                    self.0.undesirable_weight
                }
            })
            .collect();
        let dev = lp.device();
        let x =
            (((ratio.narrow(0, 0, n)? - kl)? * Tensor::new(sign.as_slice(), dev)?)? * self.0.beta)?;
        let sigma = log_sigmoid(&x)?.exp()?;
        let loss = ((sigma.neg()? + 1.0)? * Tensor::new(weight.as_slice(), dev)?)?;
        let (nd, nu) = (
            pb.desirable.iter().filter(|&&d| d).count(),
            pb.desirable.iter().filter(|&&d| !d).count(),
        );
        let mean_of = |want: bool, k: usize| {
            let s: f64 = (0..n)
                .filter(|&i| pb.desirable[i] == want)
                .map(|i| self.0.beta * ratio_h[i])
                .sum();
            // scaled so that the step's mean over rows gives the mean over these rows
            if k == 0 {
                0.0
            } else {
                s / k as f64 * n as f64
            }
        };
        let mut m = metrics(&[("kl", kl * n as f64)]);
        if nd > 0 {
            m.insert("desirable_reward".into(), mean_of(true, nd));
        }
        if nu > 0 {
            m.insert("undesirable_reward".into(), mean_of(false, nu));
        }
        Ok(LossSum {
            loss: loss.sum_all()?,
            metrics: m,
        })
    }
}

/// Make rows fit `objective`: DPO and ORPO need pairs; KTO takes rated answers, or pairs
/// split into a desirable and an undesirable answer, and gets each row's mismatched KL
/// sequence (this prompt with the previous row's answer, rotating within consecutive groups
/// of `group` rows, as TRL does per batch); SFT on preference data learns the chosen or
/// desirable answers. Returns a note for the log when the data changed shape.
pub fn shape_rows(
    objective: ObjectiveKind,
    rows: Vec<Tokenized>,
    group: usize,
) -> std::result::Result<(Vec<Tokenized>, Option<String>), String> {
    check_rows(objective, &rows)?;
    let pairs = rows.iter().filter(|r| is_pair(r)).count();
    let rated = rows.iter().filter(|r| r.desirable.is_some()).count();
    match objective {
        _ if objective == ObjectiveKind::Sft && pairs + rated == 0 => Ok((rows, None)),
        ObjectiveKind::Sft => {
            let n = rows.len();
            let kept: Vec<Tokenized> = rows
                .into_iter()
                .filter(|r| r.desirable != Some(false))
                .map(|r| Tokenized::new(r.ids, r.trained))
                .collect();
            let note = format!(
                "objective sft on preference data: learning the {} chosen or desirable answers of {n} records",
                kept.len()
            );
            Ok((kept, Some(note)))
        }
        ObjectiveKind::Dpo | ObjectiveKind::Orpo => Ok((rows, None)),
        ObjectiveKind::Kto => {
            let mut out = Vec::with_capacity(rows.len() + pairs);
            for r in rows {
                match (r.pair, r.desirable) {
                    (Some(p), None) => {
                        out.push(Tokenized {
                            desirable: Some(true),
                            ..Tokenized::new(r.ids, r.trained)
                        });
                        out.push(Tokenized {
                            desirable: Some(false),
                            ..*p
                        });
                    }
                    (pair, desirable) => out.push(Tokenized {
                        pair,
                        desirable,
                        ..r
                    }),
                }
            }
            for chunk in out.chunks_mut(group.max(1)) {
                let k = chunk.len();
                let answers: Vec<(Vec<u32>, Vec<bool>)> = chunk.iter().map(answer_of).collect();
                for (i, r) in chunk.iter_mut().enumerate() {
                    let start = prompt_len(r);
                    let (ids, trained) = &answers[(i + k - 1) % k];
                    let mut kl = Tokenized::new(r.ids[..start].to_vec(), vec![false; start]);
                    kl.ids.extend(ids);
                    kl.trained.extend(trained);
                    r.pair = Some(Box::new(kl));
                }
            }
            let note = (pairs > 0).then(|| format!("objective kto on {pairs} preference pairs: each chosen answer is desirable, each rejected one undesirable"));
            Ok((out, note))
        }
    }
}

/// Whether `rows` can train `objective`: DPO and ORPO need pairs, KTO rated answers or
/// pairs; the error says what the data is instead.
pub fn check_rows(objective: ObjectiveKind, rows: &[Tokenized]) -> std::result::Result<(), String> {
    let pairs = rows.iter().filter(|r| is_pair(r)).count();
    let rated = rows.iter().filter(|r| r.desirable.is_some()).count();
    match objective {
        ObjectiveKind::Dpo | ObjectiveKind::Orpo if pairs < rows.len() => Err(format!(
            "objective {} needs preference pairs (records with `prompt`, `chosen` and `rejected`); this dataset has {}",
            objective.as_str(),
            if rated > 0 {
                "rated answers (KTO's `completion` / `label`): use objective kto"
            } else {
                "no pairs (use objective sft)"
            }
        )),
        ObjectiveKind::Kto if pairs + rated < rows.len() => Err(
            "objective kto needs answers rated desirable or not (`prompt`, `completion`, `label`) or preference pairs (use objective sft)".into(),
        ),
        _ => Ok(()),
    }
}

/// A DPO pair (a KTO row's pair is its KL sequence).
fn is_pair(r: &Tokenized) -> bool {
    r.pair.is_some() && r.desirable.is_none()
}

/// Where a row's answer starts: its first trained token.
fn prompt_len(r: &Tokenized) -> usize {
    r.trained.iter().position(|&t| t).unwrap_or(r.ids.len())
}

fn answer_of(r: &Tokenized) -> (Vec<u32>, Vec<bool>) {
    let s = prompt_len(r);
    (r.ids[s..].to_vec(), r.trained[s..].to_vec())
}

/// Each row's reference log-probabilities (its sequence's and its pair's), from `model` as
/// it is — call it before the method is applied — with inference kernels, `batch_size` rows
/// at a time; `progress(done, total)` after each batch.
pub fn compute_references(
    model: &DecoderModel,
    rows: &mut [Tokenized],
    batch_size: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<()> {
    let (training, inference) = (model.mode.training(), model.mode.inference());
    model.mode.set_training(false);
    model.mode.set_inference(true);
    let total = rows.len();
    let mut done = 0;
    // forward only: the explicit path's kernels where they apply
    let explicit = super::explicit::unsupported(model, &[], &super::objective::Sft).is_none();
    for chunk in rows.chunks_mut(batch_size.max(1)) {
        let batch = make_pref_batch(&chunk.iter().collect::<Vec<_>>(), &model.device, false)?;
        let nll = if explicit {
            let (nll, _) = super::explicit::target_nll(model, &batch)?;
            super::explicit::nll_var(nll)?.as_tensor().clone()
        } else {
            let h = model
                .hidden_states(&batch.input, 0, None, Ops::Fused)?
                .detach();
            target_nll(model, &h, &batch.rows, &batch.targets)?
        };
        let lp = sequence_logps(&nll, &batch)?;
        let lp = lp.to_vec1::<f64>()?;
        let n = chunk.len();
        for (i, r) in chunk.iter_mut().enumerate() {
            r.reference = vec![lp[i], lp[n + i]];
        }
        done += n;
        progress(done, total);
    }
    model.mode.set_training(training);
    model.mode.set_inference(inference);
    Ok(())
}

/// The objective for a preference kind.
pub fn objective(cfg: &crate::config::TrainConfig) -> Option<Box<dyn Objective>> {
    Some(match cfg.objective {
        ObjectiveKind::Sft => return None,
        ObjectiveKind::Dpo => Box::new(Dpo(cfg.dpo.clone())),
        ObjectiveKind::Orpo => Box::new(Orpo {
            cfg: cfg.orpo.clone(),
            whole_row: cfg.train_on_prompt,
        }),
        ObjectiveKind::Kto => Box::new(Kto(cfg.kto.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prompt: &[u32], answer: &[u32]) -> Tokenized {
        let ids: Vec<u32> = prompt.iter().chain(answer).copied().collect();
        let trained = (0..ids.len()).map(|i| i >= prompt.len()).collect();
        Tokenized::new(ids, trained)
    }

    #[test]
    fn kto_splits_pairs_and_rotates_answers_for_the_kl_estimate() {
        let pair = |p: u32, c: u32, r: u32| Tokenized {
            pair: Some(Box::new(row(&[p], &[r]))),
            ..row(&[p], &[c])
        };
        let rows = vec![pair(1, 10, 20), pair(2, 11, 21)];
        let (kto, note) = shape_rows(ObjectiveKind::Kto, rows.clone(), 4).unwrap();
        assert!(note.unwrap().contains("2 preference pairs"));
        let labels: Vec<_> = kto.iter().map(|r| r.desirable.unwrap()).collect();
        assert_eq!(labels, [true, false, true, false]);
        // each prompt with the previous row's answer, within groups of 4
        let kl: Vec<Vec<u32>> = kto
            .iter()
            .map(|r| r.pair.as_ref().unwrap().ids.clone())
            .collect();
        assert_eq!(kl, [vec![1, 21], vec![1, 10], vec![2, 20], vec![2, 11]]);
        // SFT learns the chosen answers; DPO refuses rated answers by name
        let (sft, _) = shape_rows(ObjectiveKind::Sft, rows.clone(), 4).unwrap();
        assert!(sft.iter().all(|r| r.pair.is_none()) && sft.len() == 2);
        let e = shape_rows(ObjectiveKind::Dpo, kto, 4).unwrap_err();
        assert!(e.contains("use objective kto"), "{e}");
        let e = check_rows(ObjectiveKind::Orpo, &[row(&[1], &[2])]).unwrap_err();
        assert!(e.contains("no pairs"), "{e}");
    }

    #[test]
    fn a_pair_batch_sums_each_sequences_targets() {
        let mut a = row(&[1, 2], &[3, 4]);
        a.pair = Some(Box::new(row(&[1, 2], &[5])));
        a.reference = vec![-1.0, -2.0];
        let b = make_pref_batch(&[&a], &Device::Cpu, true).unwrap();
        let p = b.pref.as_ref().unwrap();
        assert_eq!(
            (p.n, p.counts.clone(), p.reference.clone()),
            (1, vec![2, 1], vec![-1.0, -2.0])
        );
        assert_eq!(
            p.member.to_vec2::<f32>().unwrap(),
            [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        );
        // ORPO over the whole chosen row: every position predicts the next token
        assert_eq!(
            p.whole.as_ref().unwrap().1.to_vec1::<u32>().unwrap(),
            [2, 3, 4]
        );
    }
}
