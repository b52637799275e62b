//! The decoder's training pass written out by hand for float32 on the CPU: forward with the
//! activations kept on a tape, then the backward of the weighted NLL in closed form.
//!
//! candle's autograd pays, per graph node, a zero-filled gradient, an addition into the gradient
//! store, fresh allocations (and their page faults) and often a contiguous copy; on a small model
//! that overhead costs more than the matrix products. Here every product is one `gemm` call reading
//! its operands through strides (transposes and per-head slices are free), element-wise work runs
//! fused, row by row, on rayon (the pool gemm uses, so no second pool competes for the cores), and
//! parameter gradients are accumulated in place (`dst += lhs·rhs`).
//!
//! The math is the autograd path's ([`Model::forward`], [`super::token_logprobs`],
//! [`super::weighted_nll`]), which is itself checked against transformers; tests compare the two.

use std::collections::HashMap;
use std::ops::{Deref, Range};

use anyhow::{bail, Result};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor, TensorId};
use gemm::Parallelism;
use rayon::prelude::*;

use super::dropout::Dropout;
use super::{Block, Linear, Model};
use crate::kernels::{self, rows_per_task, CHUNK};
use crate::optim::Grads;
use buffers::Buf;
pub(super) use layout::Layout;

mod attention;
mod buffers;
mod layout;

/// What the forward pass keeps for the backward pass (everything `[rows, ·]` over the packed rows,
/// row-major).
pub(super) struct Tape {
    layout: Layout,
    /// The packed token ids (see [`Layout`]).
    ids: Vec<u32>,
    /// Rope tables `[T, head_dim]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    layers: Vec<LayerTape>,
    /// Input of the final norm, its inverse RMS per row, and its output.
    x_final: Buf,
    inv_rms_final: Buf,
    normed_final: Buf,
    /// `[rows, V]`; the backward pass turns them into their gradient in place.
    logits: Buf,
    /// Log-sum-exp of each row of `logits`.
    logsumexp: Buf,
    /// `[B, T-1]` (padded layout): log-probability of each next token.
    logp: Vec<f32>,
    /// The adapters' dropout in this pass (its masks are redrawn, not stored, for the backward pass).
    dropout: Option<Dropout>,
}

struct LayerTape {
    x_in: Buf,
    inv_rms1: Buf,
    /// The inputs of the projections (norm outputs and the SwiGLU product) serve only their weight
    /// and adapter gradients: kept when the base trains; with a frozen base (LoRA) dropped, and
    /// recomputed in the backward pass where an adapter needs them (see [`projection_input`]).
    h1: Option<Buf>,
    /// Queries and keys after rope.
    q: Buf,
    k: Buf,
    v: Buf,
    /// Log-sum-exp of each query row's scaled attention scores, `[B, heads, T]` (the probabilities
    /// are recomputed from it in the backward pass).
    attn_lse: Buf,
    attn_out: Buf,
    x_mid: Buf,
    inv_rms2: Buf,
    h2: Option<Buf>,
    gate: Buf,
    up: Buf,
    act: Option<Buf>,
}

pub(super) use buffers::release as release_buffers;

/// Whether the hand-written pass applies to `model`: float32 parameters on the CPU.
pub(super) fn applies(model: &Model) -> bool {
    model.device.is_cpu() && model.dtype == DType::F32
}

/// A parameter's float32 values, read-locked for the duration of a pass.
struct Param<'a> {
    guard: Box<dyn Deref<Target = Storage> + 'a>,
    start: usize,
    end: usize,
}

impl<'a> Param<'a> {
    fn new(t: &'a Tensor) -> Result<Param<'a>> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("parameter {:?} is not contiguous", t.shape())
        };
        if !matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))) {
            bail!("the hand-written training pass needs float32 parameters on the CPU");
        }
        Ok(Param { guard: Box::new(guard), start, end })
    }

    fn data(&self) -> &[f32] {
        match &**self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => unreachable!("checked in Param::new"),
        }
    }
}

struct LinearParams<'a> {
    weight: Param<'a>,
    bias: Option<Param<'a>>,
    weight_id: TensorId,
    bias_id: Option<TensorId>,
    /// The base is frozen (a LoRA adapter is attached to the model): no gradient for weight and bias.
    frozen: bool,
    adapter: Option<AdapterParams<'a>>,
}

/// A LoRA adapter's `A` `[r, in]` and `B` `[out, r]`, its scale, and its input's dropout.
struct AdapterParams<'a> {
    a: Param<'a>,
    b: Param<'a>,
    a_id: TensorId,
    b_id: TensorId,
    scale: f32,
    dropout: Option<AdapterDropout<'a>>,
}

/// The dropout mask on one adapter's input: the pass's dropout, the projection's stream, and the
/// [`super::dropout::token_key`] of every packed row.
struct AdapterDropout<'a> {
    dropout: Dropout,
    stream: u64,
    tokens: &'a [u64],
}

impl AdapterDropout<'_> {
    /// `x ∘ mask`: the adapter's input.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.dropout.apply(self.stream, self.tokens, x)
    }

    /// The mask itself, `[rows, width]` (the backward pass uses it twice).
    fn mask(&self, width: usize) -> Vec<f32> {
        self.dropout.mask(self.stream, self.tokens, width)
    }
}

/// `a ∘ b`, element-wise.
fn product(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((out, a), b)| {
        out.iter_mut().zip(a).zip(b).for_each(|((o, &a), &b)| *o = a * b);
    });
    out
}

/// A pass's adapter dropout and the token keys of its packed rows.
type PassDropout<'a> = Option<(Dropout, &'a [u64])>;

impl<'a> LinearParams<'a> {
    fn new(linear: &'a Linear, frozen: bool, dropout: PassDropout<'a>) -> Result<LinearParams<'a>> {
        let adapter = match &linear.adapter {
            None => None,
            Some(ad) => Some(AdapterParams {
                a: Param::new(ad.a.as_tensor())?,
                b: Param::new(ad.b.as_tensor())?,
                a_id: ad.a.as_tensor().id(),
                b_id: ad.b.as_tensor().id(),
                scale: ad.scale as f32,
                dropout: dropout.map(|(dropout, tokens)| AdapterDropout { dropout, stream: ad.stream, tokens }),
            }),
        };
        Ok(LinearParams {
            weight: Param::new(linear.weight.as_tensor())?,
            bias: linear.bias.as_ref().map(|b| Param::new(b.as_tensor())).transpose()?,
            weight_id: linear.weight.as_tensor().id(),
            bias_id: linear.bias.as_ref().map(|b| b.as_tensor().id()),
            frozen,
            adapter,
        })
    }
}

struct BlockParams<'a> {
    ln1: Param<'a>,
    ln1_id: TensorId,
    q: LinearParams<'a>,
    k: LinearParams<'a>,
    v: LinearParams<'a>,
    o: LinearParams<'a>,
    ln2: Param<'a>,
    ln2_id: TensorId,
    gate: LinearParams<'a>,
    up: LinearParams<'a>,
    down: LinearParams<'a>,
}

impl<'a> BlockParams<'a> {
    /// `frozen`: the base parameters get no gradient (a LoRA adapter is attached); `dropout`: the
    /// adapters' dropout in a training pass.
    fn new(block: &'a Block, frozen: bool, dropout: PassDropout<'a>) -> Result<BlockParams<'a>> {
        let (attn, mlp) = (&block.self_attn, &block.mlp);
        let linear = |l: &'a Linear| LinearParams::new(l, frozen, dropout);
        Ok(BlockParams {
            ln1: Param::new(block.input_layernorm.as_tensor())?,
            ln1_id: block.input_layernorm.as_tensor().id(),
            q: linear(&attn.q_proj)?,
            k: linear(&attn.k_proj)?,
            v: linear(&attn.v_proj)?,
            o: linear(&attn.o_proj)?,
            ln2: Param::new(block.post_attention_layernorm.as_tensor())?,
            ln2_id: block.post_attention_layernorm.as_tensor().id(),
            gate: linear(&mlp.gate_proj)?,
            up: linear(&mlp.up_proj)?,
            down: linear(&mlp.down_proj)?,
        })
    }
}

/// Model dimensions used throughout the pass.
#[derive(Clone, Copy)]
struct Dims {
    /// Packed rows (tokens) in the pass.
    rows: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    eps: f32,
}

impl Dims {
    fn new(model: &Model, rows: usize) -> Dims {
        let c = &model.config;
        Dims {
            rows,
            hidden: c.hidden_size,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            vocab: c.vocab_size,
            eps: c.rms_norm_eps as f32,
        }
    }
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Forward pass over `ids` (`[B, T]`, T ≥ 2, laid out as `layout` says), keeping the tape.
/// An adapter with dropout draws its masks from the model's current dropout seed.
pub(super) fn forward(model: &Model, ids: &[u32], layout: Layout) -> Result<Tape> {
    let dims = Dims::new(model, layout.rows);
    let ids = layout.pack_ids(ids);
    let (cos, sin) = rope_tables(model, layout.time)?;
    let mut layers = Vec::with_capacity(model.layers.len());
    let dropout = model.training_dropout();
    let x = decoder(model, &ids, &cos, &sin, &layout, dropout, |tape| layers.push(tape))?;

    let norm = Param::new(model.norm.as_tensor())?;
    let (inv_rms_final, normed_final) = rms_norm(&x, norm.data(), dims.hidden, dims.eps);
    let head = Param::new(model.lm_head.as_tensor())?;
    let logits = head_logits(&normed_final, head.data(), dims);
    let logsumexp = row_logsumexp(&logits, dims.vocab);
    let logp = layout.unpack(&next_token_logp(&logits, &logsumexp, &ids, 0..dims.rows, &layout, dims));
    Ok(Tape {
        layout,
        ids,
        cos,
        sin,
        layers,
        x_final: x,
        inv_rms_final,
        normed_final,
        logits,
        logsumexp,
        logp,
        dropout,
    })
}

/// Rows of logits formed at once by [`next_token_logprobs`]: 256 rows of a 150 K vocabulary are 150 MB.
const LOGIT_ROWS: usize = 256;

/// The `[B, T-1]` next-token log-probabilities of [`forward`] with nothing kept for a backward pass:
/// each layer's activations are freed once the next layer has its input, and the logits are formed
/// [`LOGIT_ROWS`] rows at a time, so memory is a few `[B·T, intermediate]` buffers and one block of
/// logits, whatever the vocabulary (attention is tiled in both passes).
pub(super) fn next_token_logprobs(model: &Model, ids: &[u32], layout: Layout) -> Result<Vec<f32>> {
    let dims = Dims::new(model, layout.rows);
    let ids = layout.pack_ids(ids);
    let (cos, sin) = rope_tables(model, layout.time)?;
    let x = decoder(model, &ids, &cos, &sin, &layout, None, drop)?;
    let norm = Param::new(model.norm.as_tensor())?;
    let normed = rms_norm(&x, norm.data(), dims.hidden, dims.eps).1;
    drop(x);
    let head = Param::new(model.lm_head.as_tensor())?;
    let mut logp = Vec::with_capacity(dims.rows);
    for start in (0..dims.rows).step_by(LOGIT_ROWS) {
        let rows = start..(start + LOGIT_ROWS).min(dims.rows);
        let block = &normed[rows.start * dims.hidden..rows.end * dims.hidden];
        let logits = head_logits(block, head.data(), Dims { rows: rows.len(), ..dims });
        let logsumexp = row_logsumexp(&logits, dims.vocab);
        logp.extend(next_token_logp(&logits, &logsumexp, &ids, rows, &layout, dims));
    }
    Ok(layout.unpack(&logp))
}

/// The embedding and every decoder layer over the packed `ids`: returns the last layer's output
/// `[rows, hidden]`, handing each layer's tape to `keep` as soon as the next layer has its input.
/// `dropout`: the adapters' dropout (a training pass only).
fn decoder(
    model: &Model,
    ids: &[u32],
    cos: &[f32],
    sin: &[f32],
    layout: &Layout,
    dropout: Option<Dropout>,
    mut keep: impl FnMut(LayerTape),
) -> Result<Buf> {
    let dims = Dims::new(model, layout.rows);
    let tokens = dropout.map(|_| layout.token_keys()).unwrap_or_default();
    let dropout = dropout.map(|d| (d, tokens.as_slice()));
    let mut x = embed(model, ids, dims)?;
    for block in &model.layers {
        let p = BlockParams::new(block, model.lora.is_some(), dropout)?;
        let (tape, x_out) = layer_forward(&p, x, cos, sin, layout, dims);
        keep(tape);
        x = x_out;
    }
    Ok(x)
}

/// The embedding rows of the packed `ids`, `[rows, hidden]` (ids checked against the vocabulary).
fn embed(model: &Model, ids: &[u32], dims: Dims) -> Result<Buf> {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= dims.vocab) {
        bail!("token id {bad} is out of range for vocabulary size {}", dims.vocab);
    }
    let embed = Param::new(model.embed_tokens.as_tensor())?;
    let mut x = Buf::stale(dims.rows * dims.hidden);
    for (row, &id) in x.chunks_mut(dims.hidden).zip(ids) {
        row.copy_from_slice(&embed.data()[id as usize * dims.hidden..(id as usize + 1) * dims.hidden]);
    }
    Ok(x)
}

/// One pre-norm decoder layer on `x_in`: what the backward pass needs, and the layer's output.
fn layer_forward(
    p: &BlockParams,
    x_in: Buf,
    cos: &[f32],
    sin: &[f32],
    layout: &Layout,
    dims: Dims,
) -> (LayerTape, Buf) {
    let (inv_rms1, h1) = rms_norm(&x_in, p.ln1.data(), dims.hidden, dims.eps);
    let mut q = linear(&h1, &p.q, dims.rows);
    let mut k = linear(&h1, &p.k, dims.rows);
    let v = linear(&h1, &p.v, dims.rows);
    rope(&mut q, cos, sin, layout, dims, dims.heads, false);
    rope(&mut k, cos, sin, layout, dims, dims.kv_heads, false);
    let (attn_lse, attn_out) = attention::forward(&q, &k, &v, layout, dims);
    let mut x_mid = linear(&attn_out, &p.o, dims.rows);
    add_in_place(&mut x_mid, &x_in);
    let (inv_rms2, h2) = rms_norm(&x_mid, p.ln2.data(), dims.hidden, dims.eps);
    let gate = linear(&h2, &p.gate, dims.rows);
    let up = linear(&h2, &p.up, dims.rows);
    let act = swiglu(&gate, &up);
    let mut x_out = linear(&act, &p.down, dims.rows);
    add_in_place(&mut x_out, &x_mid);
    let keep = |input: Buf| (!p.q.frozen).then_some(input);
    let (h1, h2, act) = (keep(h1), keep(h2), keep(act));
    (LayerTape { x_in, inv_rms1, h1, q, k, v, attn_lse, attn_out, x_mid, inv_rms2, h2, gate, up, act }, x_out)
}

/// `normed · headᵀ`: logits `[dims.rows, V]` for `dims.rows` rows of the final norm's output.
fn head_logits(normed: &[f32], head: &[f32], dims: Dims) -> Buf {
    let mut logits = Buf::stale(dims.rows * dims.vocab);
    matmul(
        &mut logits,
        dims.vocab,
        false,
        Mat::rows(normed, dims.rows, dims.hidden),
        Mat::transposed(head, dims.vocab, dims.hidden),
        true,
    );
    logits
}

/// The log-probability of the next token at each packed row of `rows` (whose `logits` and `logsumexp`
/// these are); 0 at a segment's last row, which predicts nothing.
fn next_token_logp(
    logits: &[f32],
    logsumexp: &[f32],
    ids: &[u32],
    rows: Range<usize>,
    layout: &Layout,
    dims: Dims,
) -> Vec<f32> {
    let start = rows.start;
    rows.map(|r| match layout.ends_segment(r) {
        true => 0.0,
        false => logits[(r - start) * dims.vocab + ids[r + 1] as usize] - logsumexp[r - start],
    })
    .collect()
}

impl Tape {
    /// `[B, T-1]` log-probabilities of the next tokens.
    pub(super) fn logp(&self) -> &[f32] {
        &self.logp
    }

    /// Entropy (nats) and top-1 probability of each next-token distribution, `[B, T-1]` each (0 where
    /// a position predicts padding).
    pub(super) fn entropy_and_top1(&self) -> (Vec<f32>, Vec<f32>) {
        let vocab = self.logits.len() / self.layout.rows;
        let mut per_row = vec![(0f32, 0f32); self.layout.rows];
        per_row.par_iter_mut().enumerate().for_each(|(r, o)| {
            *o = kernels::entropy_and_top1(&self.logits[r * vocab..(r + 1) * vocab]);
        });
        self.layout.unpack(&per_row).into_iter().unzip()
    }
}

/// Gradients of `-Σ weights · logp` (`weights` `[B, T-1]`, treated as constants) for every
/// parameter, keyed by Hugging Face name.
pub(super) fn backward(model: &Model, tape: Tape, weights: &[f32]) -> Result<Grads> {
    let Tape {
        layout,
        ids,
        cos,
        sin,
        layers,
        x_final,
        inv_rms_final,
        normed_final,
        mut logits,
        logsumexp,
        dropout,
        ..
    } = tape;
    let positions = layout.batch * (layout.time - 1);
    if weights.len() != positions {
        bail!("{} weights for {positions} log-probabilities", weights.len());
    }
    let weights = layout.pack(weights);
    let dims = Dims::new(model, layout.rows);
    let mut grads = GradBuffers::default();

    // d(-w·logp)/d logits = w · (softmax - onehot(target)); a segment's last position predicts nothing.
    let vocab = dims.vocab;
    logits.par_chunks_mut(vocab).enumerate().for_each(|(r, row)| {
        if layout.ends_segment(r) {
            row.fill(0.0);
            return;
        }
        kernels::nll_logits_grad_row(row, logsumexp[r], weights[r], ids[r + 1] as usize);
    });
    let d_logits = logits;

    let head = Param::new(model.lm_head.as_tensor())?;
    let mut dx = Buf::stale(dims.rows * dims.hidden);
    matmul(
        &mut dx,
        dims.hidden,
        false,
        Mat::rows(&d_logits, dims.rows, vocab),
        Mat::rows(head.data(), vocab, dims.hidden),
        true,
    );
    drop(head);
    // With a LoRA adapter the base is frozen: only the input gradients flow, to reach the adapters.
    let frozen = model.lora.is_some();
    if !frozen {
        let head_id = model.lm_head.as_tensor().id();
        weight_grad(grads.get(head_id, vocab * dims.hidden), &d_logits, &normed_final, dims.rows, vocab, dims.hidden);
    }
    drop(d_logits);

    let norm = Param::new(model.norm.as_tensor())?;
    let (dx_norm, d_norm) = rms_norm_backward(&dx, &x_final, &inv_rms_final, norm.data(), dims.hidden, !frozen);
    if let Some(d_norm) = d_norm {
        add_in_place(grads.get(model.norm.as_tensor().id(), dims.hidden), &d_norm);
    }
    let mut dx = dx_norm;

    let tokens = dropout.map(|_| layout.token_keys()).unwrap_or_default();
    let dropout = dropout.map(|d| (d, tokens.as_slice()));
    for (block, tape) in model.layers.iter().zip(layers).rev() {
        let p = BlockParams::new(block, frozen, dropout)?;
        let (eps, hidden) = (dims.eps, dims.hidden);
        // MLP: x_out = x_mid + down(silu(gate(h2)) · up(h2)), h2 = norm2(x_mid).
        let act = projection_input(tape.act, &[&p.down], || swiglu(&tape.gate, &tape.up));
        let d_act = linear_backward(&dx, act.as_deref(), &p.down, dims.rows, &mut grads);
        drop(act);
        let (d_gate, d_up) = swiglu_backward(&d_act, &tape.gate, &tape.up);
        drop(d_act);
        let h2 = projection_input(tape.h2, &[&p.gate, &p.up], || rms_norm(&tape.x_mid, p.ln2.data(), hidden, eps).1);
        let mut d_h2 = linear_backward(&d_gate, h2.as_deref(), &p.gate, dims.rows, &mut grads);
        linear_backward_into(&mut d_h2, &d_up, h2.as_deref(), &p.up, dims.rows, &mut grads);
        drop(h2);
        let (d_mid, d_ln2) = rms_norm_backward(&d_h2, &tape.x_mid, &tape.inv_rms2, p.ln2.data(), dims.hidden, !frozen);
        if let Some(d_ln2) = d_ln2 {
            add_in_place(grads.get(p.ln2_id, dims.hidden), &d_ln2);
        }
        add_in_place(&mut dx, &d_mid); // dx is now the gradient at x_mid

        // Attention: x_mid = x_in + o(attn(rope(q(h1)), rope(k(h1)), v(h1))), h1 = norm1(x_in).
        let d_attn = linear_backward(&dx, Some(&tape.attn_out), &p.o, dims.rows, &mut grads);
        let (mut dq, mut dk, dv) = attention::backward(
            &d_attn,
            attention::Saved { q: &tape.q, k: &tape.k, v: &tape.v, out: &tape.attn_out, lse: &tape.attn_lse },
            &layout,
            dims,
        );
        drop(d_attn);
        rope(&mut dq, &cos, &sin, &layout, dims, dims.heads, true);
        rope(&mut dk, &cos, &sin, &layout, dims, dims.kv_heads, true);
        let h1 = projection_input(tape.h1, &[&p.q, &p.k, &p.v], || rms_norm(&tape.x_in, p.ln1.data(), hidden, eps).1);
        let mut d_h1 = linear_backward(&dq, h1.as_deref(), &p.q, dims.rows, &mut grads);
        linear_backward_into(&mut d_h1, &dk, h1.as_deref(), &p.k, dims.rows, &mut grads);
        linear_backward_into(&mut d_h1, &dv, h1.as_deref(), &p.v, dims.rows, &mut grads);
        drop(h1);
        let (d_in, d_ln1) = rms_norm_backward(&d_h1, &tape.x_in, &tape.inv_rms1, p.ln1.data(), dims.hidden, !frozen);
        if let Some(d_ln1) = d_ln1 {
            add_in_place(grads.get(p.ln1_id, dims.hidden), &d_ln1);
        }
        add_in_place(&mut dx, &d_in); // dx is now the gradient at x_in
    }

    if !frozen {
        let d_embed = grads.get(model.embed_tokens.as_tensor().id(), vocab * dims.hidden);
        for (row, &id) in dx.chunks(dims.hidden).zip(&ids) {
            add_in_place(&mut d_embed[id as usize * dims.hidden..(id as usize + 1) * dims.hidden], row);
        }
    }
    grads.into_named(model)
}

/// Gradient buffers keyed by parameter (a tied matrix is one key, so both uses accumulate).
#[derive(Default)]
struct GradBuffers {
    by_id: HashMap<TensorId, Vec<f32>>,
}

impl GradBuffers {
    fn get(&mut self, id: TensorId, len: usize) -> &mut [f32] {
        self.by_id.entry(id).or_insert_with(|| vec![0f32; len])
    }

    fn into_named(mut self, model: &Model) -> Result<Grads> {
        let mut grads = Grads::default();
        for (name, var) in model.trainable_params() {
            if let Some(g) = self.by_id.remove(&var.as_tensor().id()) {
                grads.insert(name.clone(), Tensor::from_vec(g, var.shape(), &Device::Cpu)?);
            }
        }
        Ok(grads)
    }
}

fn rope_tables(model: &Model, time: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let (cos, sin) = model.rope.tables(time, DType::F32, &Device::Cpu)?;
    Ok((cos.flatten_all()?.to_vec1()?, sin.flatten_all()?.to_vec1()?))
}

// ---------------------------------------------------------------------------------------------
// Matrix products (gemm through strides) and the layers' element-wise kernels.
// ---------------------------------------------------------------------------------------------

/// A read-only matrix view: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix.
    fn rows(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `rows × cols` matrix (so `cols × rows`).
    fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat { data, rows: cols, cols: rows, row_stride: 1, col_stride: cols }
    }

    /// The transpose view.
    fn t(self) -> Mat<'a> {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn last_index(&self) -> usize {
        (self.rows.max(1) - 1) * self.row_stride + (self.cols.max(1) - 1) * self.col_stride
    }
}

/// `dst (+)= lhs · rhs`, `dst` row-major with `dst_stride` between rows; `accumulate` adds to
/// what `dst` holds. `parallel` spreads the product over the rayon pool.
fn matmul(dst: &mut [f32], dst_stride: usize, accumulate: bool, lhs: Mat, rhs: Mat, parallel: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions");
    if m == 0 || n == 0 {
        return;
    }
    // Operand bounds checked here, so that gemm's raw-pointer reads stay inside the slices.
    assert!(lhs.data.len() > lhs.last_index() && rhs.data.len() > rhs.last_index(), "matmul: operand bounds");
    assert!(n <= dst_stride && dst.len() >= (m - 1) * dst_stride + n, "matmul: destination bounds");
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let threads = crate::ops::cpu_threads();
    let parallelism =
        if parallel && threads > 1 && m * n * k >= 1 << 16 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: operand and destination indices are within their slices (asserted), and `dst` is
    // borrowed exclusively.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `x · Wᵀ + b` for `x` `[rows, in]` and a `[out, in]` weight.
fn linear(x: &[f32], p: &LinearParams, rows: usize) -> Buf {
    let w = p.weight.data();
    let in_dim = x.len() / rows;
    let out_dim = w.len() / in_dim;
    let mut y = Buf::stale(rows * out_dim);
    if let Some(b) = &p.bias {
        y.chunks_mut(out_dim).for_each(|row| row.copy_from_slice(b.data()));
    }
    matmul(&mut y, out_dim, p.bias.is_some(), Mat::rows(x, rows, in_dim), Mat::transposed(w, out_dim, in_dim), true);
    if let Some(ad) = &p.adapter {
        // y += s · (x_d Aᵀ) Bᵀ (x_d: x through the adapter's dropout), the scale applied to the small
        // [rows, r] product.
        let dropped = ad.dropout.as_ref().map(|d| d.apply(x));
        let mut down = adapter_down(dropped.as_deref().unwrap_or(x), ad, rows);
        kernels::scale(&mut down, ad.scale);
        let r = down.len() / rows;
        matmul(&mut y, out_dim, true, Mat::rows(&down, rows, r), Mat::transposed(ad.b.data(), out_dim, r), true);
    }
    y
}

/// `x Aᵀ`, `[rows, r]`: the adapter's input product (recomputed in the backward pass rather than kept:
/// it costs `r / out` of the base product). `x` is the adapter's input after its dropout.
fn adapter_down(x: &[f32], ad: &AdapterParams, rows: usize) -> Buf {
    let in_dim = x.len() / rows;
    let r = ad.a.data().len() / in_dim;
    let mut down = Buf::stale(rows * r);
    matmul(&mut down, r, false, Mat::rows(x, rows, in_dim), Mat::transposed(ad.a.data(), r, in_dim), true);
    down
}

/// The input of projections `users` for their backward pass: the kept one, else (a frozen base) recomputed
/// when one of them has an adapter, else none (a frozen projection's input gradient needs only its weight).
fn projection_input(kept: Option<Buf>, users: &[&LinearParams], recompute: impl FnOnce() -> Buf) -> Option<Buf> {
    kept.or_else(|| users.iter().any(|p| p.adapter.is_some()).then(recompute))
}

/// Accumulates `dW += dyᵀ · x` (and `db += Σ_rows dy`), and returns `dx = dy · W`. `x` (the forward
/// input) is needed only when the weight or an adapter trains.
fn linear_backward(dy: &[f32], x: Option<&[f32]>, p: &LinearParams, rows: usize, grads: &mut GradBuffers) -> Buf {
    let mut dx = Buf::stale(rows * p.weight.data().len() / (dy.len() / rows));
    linear_backward_impl(&mut dx, false, dy, x, p, rows, grads);
    dx
}

/// As [`linear_backward`], adding `dy · W` into `dx`.
fn linear_backward_into(
    dx: &mut [f32],
    dy: &[f32],
    x: Option<&[f32]>,
    p: &LinearParams,
    rows: usize,
    grads: &mut GradBuffers,
) {
    linear_backward_impl(dx, true, dy, x, p, rows, grads);
}

fn linear_backward_impl(
    dx: &mut [f32],
    accumulate: bool,
    dy: &[f32],
    x: Option<&[f32]>,
    p: &LinearParams,
    rows: usize,
    grads: &mut GradBuffers,
) {
    let out_dim = dy.len() / rows;
    let in_dim = p.weight.data().len() / out_dim;
    matmul(dx, in_dim, accumulate, Mat::rows(dy, rows, out_dim), Mat::rows(p.weight.data(), out_dim, in_dim), true);
    if p.frozen && p.adapter.is_none() {
        return;
    }
    let x = x.expect("the backward pass has a projection's input wherever its weight or adapter trains");
    if let Some(ad) = &p.adapter {
        // y = … + s · (x_d Aᵀ) Bᵀ with x_d = x ∘ mask: dB += s · dyᵀ (x_d Aᵀ); d(x_d Aᵀ) = s · dy B;
        // dA += d(x_d Aᵀ)ᵀ x_d; dx += (d(x_d Aᵀ) A) ∘ mask.
        let mask = ad.dropout.as_ref().map(|d| d.mask(in_dim));
        let dropped = mask.as_deref().map(|mask| product(x, mask));
        let x_adapter = dropped.as_deref().unwrap_or(x);
        let mut down = adapter_down(x_adapter, ad, rows);
        let r = down.len() / rows;
        kernels::scale(&mut down, ad.scale);
        weight_grad(grads.get(ad.b_id, out_dim * r), dy, &down, rows, out_dim, r);
        let mut d_down = down;
        matmul(&mut d_down, r, false, Mat::rows(dy, rows, out_dim), Mat::rows(ad.b.data(), out_dim, r), true);
        kernels::scale(&mut d_down, ad.scale);
        weight_grad(grads.get(ad.a_id, r * in_dim), &d_down, x_adapter, rows, r, in_dim);
        drop(dropped);
        let a = Mat::rows(ad.a.data(), r, in_dim);
        match mask {
            None => matmul(dx, in_dim, true, Mat::rows(&d_down, rows, r), a, true),
            Some(mask) => {
                let mut d_dropped = Buf::stale(rows * in_dim);
                matmul(&mut d_dropped, in_dim, false, Mat::rows(&d_down, rows, r), a, true);
                add_in_place(dx, &product(&d_dropped, &mask));
            }
        }
    }
    if p.frozen {
        return;
    }
    weight_grad(grads.get(p.weight_id, out_dim * in_dim), dy, x, rows, out_dim, in_dim);
    if let Some(id) = p.bias_id {
        let db = grads.get(id, out_dim);
        for row in dy.chunks(out_dim) {
            kernels::add_assign(db, row);
        }
    }
}

/// `dW += dyᵀ · x` for `dy` `[rows, out]` and `x` `[rows, in]`.
fn weight_grad(dw: &mut [f32], dy: &[f32], x: &[f32], rows: usize, out_dim: usize, in_dim: usize) {
    matmul(dw, in_dim, true, Mat::transposed(dy, rows, out_dim), Mat::rows(x, rows, in_dim), true);
}

/// `acc += x`, element-wise.
fn add_in_place(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(a, x)| kernels::add_assign(a, x));
}

/// `(1 / rms, w · x / rms)` per row of width `h`.
fn rms_norm(x: &[f32], w: &[f32], h: usize, eps: f32) -> (Buf, Buf) {
    let rows = x.len() / h;
    let mut inv = Buf::stale(rows);
    let mut y = Buf::stale(x.len());
    let per = rows_per_task(h);
    y.par_chunks_mut(per * h).zip(inv.par_chunks_mut(per)).enumerate().for_each(|(task, (y, inv))| {
        for (i, (out, inv)) in y.chunks_mut(h).zip(inv.iter_mut()).enumerate() {
            let r = task * per + i;
            *inv = kernels::rms_norm_row(&x[r * h..(r + 1) * h], w, eps, out);
        }
    });
    (inv, y)
}

/// `(dx, dw)` of RMSNorm: `dx = inv · (g·w - x · inv² · mean(g·w·x))`, `dw = Σ_rows g · x · inv` (only
/// with `weight_grad`).
fn rms_norm_backward(
    g: &[f32],
    x: &[f32],
    inv: &[f32],
    w: &[f32],
    h: usize,
    weight_grad: bool,
) -> (Buf, Option<Vec<f32>>) {
    let mut dx = Buf::stale(x.len());
    let per = rows_per_task(h);
    dx.par_chunks_mut(per * h).enumerate().for_each(|(task, dx)| {
        for (i, out) in dx.chunks_mut(h).enumerate() {
            let r = task * per + i;
            kernels::rms_norm_backward_row(&g[r * h..(r + 1) * h], &x[r * h..(r + 1) * h], w, inv[r], out);
        }
    });
    if !weight_grad {
        return (dx, None);
    }
    let mut dw = vec![0f32; h];
    for ((xr, gr), &ir) in x.chunks(h).zip(g.chunks(h)).zip(inv) {
        kernels::rms_norm_weight_grad_row(&mut dw, gr, xr, ir);
    }
    (dx, Some(dw))
}

/// Rope in place on `[rows, heads·d]` (each packed row at its position within its segment), or with
/// `inverse` its transpose (the backward pass).
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32], layout: &Layout, dims: Dims, heads: usize, inverse: bool) {
    let d = dims.head_dim;
    let width = heads * d;
    let per = rows_per_task(width);
    x.par_chunks_mut(per * width).enumerate().for_each(|(task, rows)| {
        for (i, row) in rows.chunks_mut(width).enumerate() {
            let pos = layout.positions[task * per + i];
            kernels::rope_row(row, &cos[pos * d..(pos + 1) * d], &sin[pos * d..(pos + 1) * d], d, inverse);
        }
    });
}

/// `silu(gate) · up`.
fn swiglu(gate: &[f32], up: &[f32]) -> Buf {
    let mut y = Buf::stale(gate.len());
    y.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK)).zip(up.par_chunks(CHUNK)).for_each(|((out, gate), up)| {
        kernels::swiglu(gate, up, out);
    });
    y
}

/// `(d gate, d up)` of [`swiglu`].
fn swiglu_backward(g: &[f32], gate: &[f32], up: &[f32]) -> (Buf, Buf) {
    let mut d_gate = Buf::stale(gate.len());
    let mut d_up = Buf::stale(gate.len());
    d_gate.par_chunks_mut(CHUNK).zip(d_up.par_chunks_mut(CHUNK)).enumerate().for_each(|(c, (dg, du))| {
        let range = c * CHUNK..c * CHUNK + dg.len();
        kernels::swiglu_backward(&g[range.clone()], &gate[range.clone()], &up[range], dg, du);
    });
    (d_gate, d_up)
}

/// `log Σ exp(row)` per row of width `width`.
fn row_logsumexp(x: &[f32], width: usize) -> Buf {
    let mut out = Buf::stale(x.len() / width);
    out.par_iter_mut().enumerate().for_each(|(r, o)| *o = kernels::logsumexp(&x[r * width..(r + 1) * width]));
    out
}
