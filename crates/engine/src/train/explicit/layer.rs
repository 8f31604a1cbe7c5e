//! One decoder layer's forward and backward on the explicit path, written out step by step
//! as llm.c writes its layers: every activation the backward pass needs is kept in
//! [`LayerSaved`], frozen weights only ever produce input gradients, and each linear's
//! adapter adds its own pieces ([`ExplicitAdapter`]).

use crate::kernels::attention::{self, Dims};
use crate::kernels::gemm::{self, Mat};
use crate::kernels::pool::{self, Buf};
use crate::kernels::rows;
use crate::linear::{BaseWeight, Grads, Linear, Saved, TrainMode};
use crate::model::DecoderModel;
use candle_core::{DType, Result, Tensor};

/// The shapes every layer shares in one micro-batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Rows: batch × sequence.
    pub n: usize,
    pub hidden: usize,
    pub inter: usize,
    pub attn: Dims,
}

impl Shape {
    fn q_width(&self) -> usize {
        self.attn.heads * self.attn.head_dim
    }
    fn kv_width(&self) -> usize {
        self.attn.kv_heads * self.attn.head_dim
    }
}

/// What the backward pass of one layer needs from its forward pass.
pub(super) struct LayerSaved {
    x: Buf,
    rstd1: Buf,
    h1: Buf,
    q: Buf,
    k: Buf,
    v: Buf,
    lse: Buf,
    att: Buf,
    x2: Buf,
    rstd2: Buf,
    h2: Buf,
    gate: Buf,
    up: Buf,
    /// The adapters' saved values: q, k, v, o, gate, up, down.
    adapters: [Option<Saved>; 7],
}

/// A norm weight's values.
pub(super) fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
}

/// `y = x·Wᵀ + b`, plus the adapter's term; returns what the adapter saved.
fn linear(
    lin: &Linear,
    x: &[f32],
    n: usize,
    y: &mut [f32],
    mode: &TrainMode,
) -> Result<Option<Saved>> {
    let (out, inp) = lin.weight.dims2()?;
    lin.weight
        .with_cpu_operand(|w| gemm::matmul(y, out, Mat::new(x, n, inp), w.t(), false))?;
    if let Some(b) = &lin.bias {
        let b = values(b)?;
        for row in y.chunks_mut(out) {
            row.iter_mut().zip(&b).for_each(|(y, b)| *y += b);
        }
    }
    match lin.adapter.as_ref().and_then(|a| a.explicit()) {
        Some(a) => Ok(Some(a.forward(lin, x, n, y, mode)?)),
        None => Ok(None),
    }
}

/// Whether any weight gradient of `lin`'s base is wanted.
fn trains(lin: &Linear, grads: &Grads) -> bool {
    matches!(&lin.weight, BaseWeight::Dense(w) if grads.trains(w))
}

/// `dx (+)= dy·W`, plus the gradients of whatever trains: the adapter's, or the base
/// weight's and bias's.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    lin: &Linear,
    x: &[f32],
    n: usize,
    saved: Option<&Saved>,
    dy: &[f32],
    dx: &mut [f32],
    accumulate: bool,
    grads: &mut Grads,
) -> Result<()> {
    let (out, inp) = lin.weight.dims2()?;
    lin.weight
        .with_cpu_operand(|w| gemm::matmul(dx, inp, Mat::new(dy, n, out), w, accumulate))?;
    // a base that trains (Full, Freeze, BitFit): dW += dyᵀ·x, db += Σ dy
    if let BaseWeight::Dense(w) = &lin.weight {
        if grads.trains(w) {
            let dw = grads.of(w);
            gemm::matmul(dw, inp, Mat::new(dy, n, out).t(), Mat::new(x, n, inp), true);
        }
    }
    if let Some(b) = lin.bias.as_ref().filter(|b| grads.trains(b)) {
        rows::column_sums(dy, grads.of(b));
    }
    if let (Some(a), Some(s)) = (lin.adapter.as_ref().and_then(|a| a.explicit()), saved) {
        a.backward(lin, x, n, s, dy, dx, grads)?;
    }
    Ok(())
}

/// Layer `l` on the residual stream `x` `[n, hidden]`: its output and what its backward
/// pass needs. `cos`, `sin` are the rope tables `[seq, head_dim / 2]`.
pub(super) fn forward(
    model: &DecoderModel,
    l: usize,
    x: Buf,
    sh: Shape,
    (cos, sin): (&[f32], &[f32]),
) -> Result<(Buf, LayerSaved)> {
    let layer = &model.layers[l];
    let eps = model.config.rms_norm_eps as f32;
    let mode = &model.mode;
    let at = &layer.self_attn;
    let (n, h, i) = (sh.n, sh.hidden, sh.inter);
    let (qw, kw) = (sh.q_width(), sh.kv_width());
    let (d, seq) = (sh.attn.head_dim, sh.attn.seq);
    let missing = || candle_core::Error::Msg("explicit path: separate k/v/up projections".into());

    let mut h1 = pool::take(n * h);
    let mut rstd1 = pool::take(n);
    rows::rms_norm(
        &x,
        &values(&layer.input_layernorm)?,
        eps,
        &mut h1,
        &mut rstd1,
    );
    let (mut q, mut k, mut v) = (pool::take(n * qw), pool::take(n * kw), pool::take(n * kw));
    let sq = linear(&at.q_proj, &h1, n, &mut q, mode)?;
    let sk = linear(
        at.k_proj.as_ref().ok_or_else(missing)?,
        &h1,
        n,
        &mut k,
        mode,
    )?;
    let sv = linear(
        at.v_proj.as_ref().ok_or_else(missing)?,
        &h1,
        n,
        &mut v,
        mode,
    )?;
    rows::rope(&mut q, sh.attn.heads, d, seq, cos, sin, false);
    rows::rope(&mut k, sh.attn.kv_heads, d, seq, cos, sin, false);
    let mut att = pool::take(n * qw);
    let mut lse = pool::take(sh.attn.batch * sh.attn.heads * seq);
    attention::forward(&q, &k, &v, sh.attn, &mut att, &mut lse);
    let mut x2 = pool::take(n * h);
    let so = linear(&at.o_proj, &att, n, &mut x2, mode)?;
    x2.iter_mut().zip(x.iter()).for_each(|(o, x)| *o += x);

    let mut h2 = pool::take(n * h);
    let mut rstd2 = pool::take(n);
    let post = values(&layer.post_attention_layernorm)?;
    rows::rms_norm(&x2, &post, eps, &mut h2, &mut rstd2);
    let m = &layer.mlp;
    let (mut gate, mut up) = (pool::take(n * i), pool::take(n * i));
    let sg = linear(&m.gate_proj, &h2, n, &mut gate, mode)?;
    let su = linear(
        m.up_proj.as_ref().ok_or_else(missing)?,
        &h2,
        n,
        &mut up,
        mode,
    )?;
    let mut act = pool::take(n * i);
    rows::swiglu(&gate, &up, &mut act);
    let mut out = pool::take(n * h);
    let sd = linear(&m.down_proj, &act, n, &mut out, mode)?;
    out.iter_mut().zip(x2.iter()).for_each(|(o, x)| *o += x);
    let saved = LayerSaved {
        x,
        rstd1,
        h1,
        q,
        k,
        v,
        lse,
        att,
        x2,
        rstd2,
        h2,
        gate,
        up,
        adapters: [sq, sk, sv, so, sg, su, sd],
    };
    Ok((out, saved))
}

/// The gradient of layer `l`'s input from its output gradient `dout`; parameter gradients
/// go to `grads`.
pub(super) fn backward(
    model: &DecoderModel,
    l: usize,
    s: LayerSaved,
    dout: Buf,
    sh: Shape,
    (cos, sin): (&[f32], &[f32]),
    grads: &mut Grads,
) -> Result<Buf> {
    let layer = &model.layers[l];
    let at = &layer.self_attn;
    let m = &layer.mlp;
    let (n, h, i) = (sh.n, sh.hidden, sh.inter);
    let (qw, kw) = (sh.q_width(), sh.kv_width());
    let (d, seq) = (sh.attn.head_dim, sh.attn.seq);
    let missing = || candle_core::Error::Msg("explicit path: separate k/v/up projections".into());
    let [sq, sk, sv, so, sg, su, sd] = &s.adapters;
    let LayerSaved {
        mut gate, mut up, ..
    } = s;

    // MLP: the down projection's input is recomputed (only its adapter or its own weight
    // gradient needs it)
    let mut act = Buf::default();
    if sd.is_some() || trains(&m.down_proj, grads) {
        act = pool::take(n * i);
        rows::swiglu(&gate, &up, &mut act);
    }
    let mut dact = pool::take(n * i);
    linear_backward(
        &m.down_proj,
        &act,
        n,
        sd.as_ref(),
        &dout,
        &mut dact,
        false,
        grads,
    )?;
    drop(act);
    rows::swiglu_backward(&dact, &mut gate, &mut up);
    drop(dact);
    let mut dh2 = pool::take(n * h);
    linear_backward(
        &m.gate_proj,
        &s.h2,
        n,
        sg.as_ref(),
        &gate,
        &mut dh2,
        false,
        grads,
    )?;
    let up_proj = m.up_proj.as_ref().ok_or_else(missing)?;
    linear_backward(up_proj, &s.h2, n, su.as_ref(), &up, &mut dh2, true, grads)?;
    drop((gate, up));
    let mut dx2 = dout;
    let post = values(&layer.post_attention_layernorm)?;
    rows::rms_norm_backward(&dh2, &s.x2, &post, &s.rstd2, &mut dx2, true);
    if grads.trains(&layer.post_attention_layernorm) {
        let dw = grads.of(&layer.post_attention_layernorm);
        rows::rms_norm_weight_grad(&dh2, &s.x2, &s.rstd2, dw);
    }
    drop(dh2);

    // attention
    let mut datt = pool::take(n * qw);
    linear_backward(
        &at.o_proj,
        &s.att,
        n,
        so.as_ref(),
        &dx2,
        &mut datt,
        false,
        grads,
    )?;
    let (mut dq, mut dk, mut dv) = (pool::take(n * qw), pool::take(n * kw), pool::take(n * kw));
    attention::backward(
        &s.q, &s.k, &s.v, &s.lse, &datt, sh.attn, &mut dq, &mut dk, &mut dv,
    );
    drop(datt);
    rows::rope(&mut dq, sh.attn.heads, d, seq, cos, sin, true);
    rows::rope(&mut dk, sh.attn.kv_heads, d, seq, cos, sin, true);
    let mut dh1 = pool::take(n * h);
    linear_backward(
        &at.q_proj,
        &s.h1,
        n,
        sq.as_ref(),
        &dq,
        &mut dh1,
        false,
        grads,
    )?;
    let k_proj = at.k_proj.as_ref().ok_or_else(missing)?;
    linear_backward(k_proj, &s.h1, n, sk.as_ref(), &dk, &mut dh1, true, grads)?;
    let v_proj = at.v_proj.as_ref().ok_or_else(missing)?;
    linear_backward(v_proj, &s.h1, n, sv.as_ref(), &dv, &mut dh1, true, grads)?;
    let mut dx = dx2;
    let w_in = values(&layer.input_layernorm)?;
    rows::rms_norm_backward(&dh1, &s.x, &w_in, &s.rstd1, &mut dx, true);
    if grads.trains(&layer.input_layernorm) {
        let dw = grads.of(&layer.input_layernorm);
        rows::rms_norm_weight_grad(&dh1, &s.x, &s.rstd1, dw);
    }
    Ok(dx)
}
