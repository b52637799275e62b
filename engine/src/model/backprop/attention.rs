//! Tiled causal grouped-query attention for the hand-written float32 pass (FlashAttention's
//! scheme on the CPU).
//!
//! The forward pass walks each query tile's keys a tile at a time with an online softmax (a running
//! max and sum per query row, the output rescaled when the max grows), so no `[T, T]` matrix is
//! ever formed: per task it holds one `QUERY_TILE × KEY_TILE` block of scores, and it keeps only the
//! log-sum-exp of each query row (`[B, heads, T]`) for the backward pass. The backward pass
//! recomputes each block's probabilities from that log-sum-exp and uses `Σ_j p·dp = dO·O`, so its
//! extra memory is two blocks per task too. Memory is O(T) per head instead of O(T²); the cost is
//! one more `q·kᵀ` product per block in the backward pass.
//!
//! The batch comes packed (see [`Layout`]): each segment is one row's causal block, and no query sees
//! another segment's keys.

use rayon::prelude::*;

use super::buffers::Buf;
use super::layout::{Layout, Segment};
use super::{kernels, matmul, matmul_raw, Dims, Mat, SendPtr};

/// Query rows per task and block.
const QUERY_TILE: usize = 64;
/// Key columns per block: a 64 × 256 block of scores is 64 KiB, cache-resident. Wide blocks keep the
/// number of small gemm calls (and the online rescaling between them) low; rows up to 256 tokens
/// take one block per query tile, as a materialised softmax would.
const KEY_TILE: usize = 256;

/// Rows `rows` of segment `seg`, head `h`, in a `[rows, heads·d]` matrix of row width `width`.
fn tile(x: &[f32], seg: Segment, h: usize, rows: std::ops::Range<usize>, dims: Dims, width: usize) -> Mat<'_> {
    let d = dims.head_dim;
    let start = (seg.start + rows.start) * width + h * d;
    let n = rows.len();
    Mat { data: &x[start..start + (n.max(1) - 1) * width + d], rows: n, cols: d, row_stride: width, col_stride: 1 }
}

/// Keys of block `j0..` that query `i` may see (causal: keys `0..=i`), at most `block` of them.
fn visible(i: usize, j0: usize, block: usize) -> usize {
    (i + 1).saturating_sub(j0).min(block)
}

/// Every (segment, query tile) of the layout.
fn query_tiles(layout: &Layout) -> Vec<(Segment, usize)> {
    layout.segments.iter().flat_map(|&seg| (0..seg.len.div_ceil(QUERY_TILE)).map(move |qt| (seg, qt))).collect()
}

/// Causal attention of `q` `[rows, heads·d]` over `k`, `v` `[rows, kv_heads·d]` within each segment
/// (head `h` reads kv head `h / groups`, rope already applied): returns the log-sum-exp of each query
/// row's scaled scores, `[heads, rows]`, and the output `[rows, heads·d]`.
pub(super) fn forward(q: &[f32], k: &[f32], v: &[f32], layout: &Layout, dims: Dims) -> (Buf, Buf) {
    let d = dims.head_dim;
    let (qw, kvw) = (dims.q_width(), dims.kv_width());
    let scale = 1.0 / (d as f32).sqrt();
    let tiles = query_tiles(layout);
    let mut lse = Buf::stale(dims.heads * dims.rows);
    let mut out = Buf::stale(dims.rows * qw);
    let (lse_base, out_base) = (SendPtr::new(&mut lse), SendPtr::new(&mut out));
    // One task per (query head, segment, query tile).
    (0..dims.heads * tiles.len()).into_par_iter().for_each(|task| {
        let (h, (seg, qt)) = (task / tiles.len(), tiles[task % tiles.len()]);
        let kv = h / dims.groups();
        let (i0, i1) = (qt * QUERY_TILE, ((qt + 1) * QUERY_TILE).min(seg.len));
        let rows = i1 - i0;
        let q_tile = tile(q, seg, h, i0..i1, dims, qw);
        // Task (h, seg, qt) alone writes packed rows seg.start+i0..seg.start+i1, columns h·d..(h+1)·d
        // of `out` and the same rows of lse[h] (the SAFETY of every write below).
        let out_tile = out_base.block((seg.start + i0) * qw + h * d, rows, d, qw);
        let mut scores = vec![0f32; rows * KEY_TILE];
        let (mut max, mut sum, mut rescale) = (vec![f32::NEG_INFINITY; rows], vec![0f32; rows], vec![0f32; rows]);
        // Keys from i1 on are hidden from every query of this tile.
        for j0 in (0..i1).step_by(KEY_TILE) {
            let j1 = (j0 + KEY_TILE).min(i1);
            let cols = j1 - j0;
            let s = &mut scores[..rows * cols];
            matmul(s, cols, false, q_tile, tile(k, seg, kv, j0..j1, dims, kvw).t(), false);
            for (r, row) in s.chunks_mut(cols).enumerate() {
                let seen = visible(i0 + r, j0, cols);
                rescale[r] = kernels::online_softmax_block_row(row, seen, scale, &mut max[r], &mut sum[r]);
            }
            if j0 > 0 {
                for (r, &c) in rescale.iter().enumerate() {
                    // SAFETY: row r of this task's block of `out`.
                    let row = unsafe { std::slice::from_raw_parts_mut(out_tile.add(r * qw), d) };
                    row.iter_mut().for_each(|o| *o *= c);
                }
            }
            // SAFETY: this task's block of `out`. The first block of keys writes it, the rest add to it.
            unsafe {
                matmul_raw(out_tile, qw, j0 > 0, Mat::rows(s, rows, cols), tile(v, seg, kv, j0..j1, dims, kvw), false)
            };
        }
        let lse_tile = lse_base.block(h * dims.rows + seg.start + i0, 1, rows, rows);
        for r in 0..rows {
            // SAFETY: row r of this task's block of `out`, element r of its stretch of `lse`.
            unsafe {
                let row = std::slice::from_raw_parts_mut(out_tile.add(r * qw), d);
                let inv = 1.0 / sum[r];
                row.iter_mut().for_each(|o| *o *= inv);
                *lse_tile.add(r) = max[r] + sum[r].ln();
            }
        }
    });
    (lse, out)
}

/// What [`backward`] reads of the forward pass: its inputs, output and log-sum-exps.
pub(super) struct Saved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
}

/// `(dq, dk, dv)` of [`forward`] given the gradient `d_out` at its output.
pub(super) fn backward(d_out: &[f32], saved: Saved, layout: &Layout, dims: Dims) -> (Buf, Buf, Buf) {
    let Saved { q, k, v, out, lse } = saved;
    let (d, groups) = (dims.head_dim, dims.groups());
    let (qw, kvw) = (dims.q_width(), dims.kv_width());
    let scale = 1.0 / (d as f32).sqrt();
    // dq, dk and dv all accumulate over blocks (dk and dv over the query heads of a group too).
    let mut dq = Buf::zeros(q.len());
    let mut dk = Buf::zeros(k.len());
    let mut dv = Buf::zeros(v.len());
    let (dq_base, dk_base, dv_base) = (SendPtr::new(&mut dq), SendPtr::new(&mut dk), SendPtr::new(&mut dv));
    // One task per (segment, kv head): it owns that kv head's dk, dv and its query heads' dq.
    let segments = &layout.segments;
    (0..segments.len() * dims.kv_heads).into_par_iter().for_each(|task| {
        let (seg, kv) = (segments[task / dims.kv_heads], task % dims.kv_heads);
        let mut probs = vec![0f32; QUERY_TILE * KEY_TILE];
        let mut d_scores = vec![0f32; QUERY_TILE * KEY_TILE];
        let mut delta = vec![0f32; QUERY_TILE];
        for h in kv * groups..(kv + 1) * groups {
            for qt in 0..seg.len.div_ceil(QUERY_TILE) {
                let (i0, i1) = (qt * QUERY_TILE, ((qt + 1) * QUERY_TILE).min(seg.len));
                let rows = i1 - i0;
                let (q_tile, do_tile) = (tile(q, seg, h, i0..i1, dims, qw), tile(d_out, seg, h, i0..i1, dims, qw));
                // Σ_j p_ij · dp_ij = dO_i · O_i, the softmax backward's row term.
                for (r, dl) in delta[..rows].iter_mut().enumerate() {
                    let at = (seg.start + i0 + r) * qw + h * d;
                    *dl = kernels::dot_product(&d_out[at..at + d], &out[at..at + d]);
                }
                let lse_rows = &lse[h * dims.rows + seg.start + i0..][..rows];
                for j0 in (0..i1).step_by(KEY_TILE) {
                    let j1 = (j0 + KEY_TILE).min(i1);
                    let cols = j1 - j0;
                    let (k_tile, v_tile) = (tile(k, seg, kv, j0..j1, dims, kvw), tile(v, seg, kv, j0..j1, dims, kvw));
                    let p = &mut probs[..rows * cols];
                    matmul(p, cols, false, q_tile, k_tile.t(), false);
                    for (r, row) in p.chunks_mut(cols).enumerate() {
                        kernels::softmax_block_row_from_lse(row, visible(i0 + r, j0, cols), scale, lse_rows[r]);
                    }
                    let ds = &mut d_scores[..rows * cols];
                    matmul(ds, cols, false, do_tile, v_tile.t(), false);
                    for (r, (row, pr)) in ds.chunks_mut(cols).zip(p.chunks(cols)).enumerate() {
                        kernels::softmax_block_backward_row(row, pr, visible(i0 + r, j0, cols), scale, delta[r]);
                    }
                    let (p, ds) = (Mat::rows(p, rows, cols), Mat::rows(ds, rows, cols));
                    // Task (seg, kv) alone touches the segment's rows, columns kv·d..(kv+1)·d of dk and
                    // dv, and columns h·d..(h+1)·d of dq for its own query heads h.
                    // SAFETY: those blocks (see above).
                    unsafe {
                        let (dk_tile, dv_tile) = (
                            dk_base.block((seg.start + j0) * kvw + kv * d, cols, d, kvw),
                            dv_base.block((seg.start + j0) * kvw + kv * d, cols, d, kvw),
                        );
                        // dv += pᵀ · dO; dq += ds · k; dk += dsᵀ · q.
                        matmul_raw(dv_tile, kvw, true, p.t(), do_tile, false);
                        let dq_tile = dq_base.block((seg.start + i0) * qw + h * d, rows, d, qw);
                        matmul_raw(dq_tile, qw, true, ds, k_tile, false);
                        matmul_raw(dk_tile, kvw, true, ds.t(), q_tile, false);
                    }
                }
            }
        }
    });
    (dq, dk, dv)
}
