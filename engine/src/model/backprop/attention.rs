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
use super::{matmul, rows_per_task, Dims, Mat};
use crate::kernels;

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

/// The query rows `i0..i1` of tile `qt` of segment `seg`.
fn tile_rows(seg: Segment, qt: usize) -> (usize, usize) {
    (qt * QUERY_TILE, ((qt + 1) * QUERY_TILE).min(seg.len))
}

/// Splits `[heads, rows, width]` into one slice per (head, segment), `[head][segment]`: the blocks the
/// parallel tasks own (disjoint by construction, as `split_at_mut` makes them).
fn by_head_and_segment<'a>(
    buf: &'a mut [f32],
    layout: &Layout,
    width: usize,
) -> Vec<std::vec::IntoIter<&'a mut [f32]>> {
    assert_eq!(layout.segments.iter().map(|s| s.len).sum::<usize>(), layout.rows, "segments cover the rows");
    buf.chunks_mut(layout.rows * width)
        .map(|mut rest| {
            let mut parts = Vec::with_capacity(layout.segments.len());
            for seg in &layout.segments {
                let (part, tail) = std::mem::take(&mut rest).split_at_mut(seg.len * width);
                parts.push(part);
                rest = tail;
            }
            parts.into_iter()
        })
        .collect()
}

/// Head `h`'s block of the next segment (see [`by_head_and_segment`]).
fn next_block<'a>(parts: &mut [std::vec::IntoIter<&'a mut [f32]>], h: usize) -> &'a mut [f32] {
    parts[h].next().expect("one block per (head, segment)")
}

/// `[heads, rows, d]` (one head's rows contiguous, as the tasks write them) → `[rows, heads·d]`.
fn heads_to_rows(by_head: &[f32], heads: usize, rows: usize, d: usize) -> Buf {
    let width = heads * d;
    let mut out = Buf::stale(rows * width);
    let per = rows_per_task(width);
    out.par_chunks_mut(per * width).enumerate().for_each(|(task, block)| {
        for (i, row) in block.chunks_mut(width).enumerate() {
            let r = task * per + i;
            for (h, dst) in row.chunks_mut(d).enumerate() {
                dst.copy_from_slice(&by_head[(h * rows + r) * d..][..d]);
            }
        }
    });
    out
}

/// Causal attention of `q` `[rows, heads·d]` over `k`, `v` `[rows, kv_heads·d]` within each segment
/// (head `h` reads kv head `h / groups`, rope already applied): returns the log-sum-exp of each query
/// row's scaled scores, `[heads, rows]`, and the output `[rows, heads·d]`.
pub(super) fn forward(q: &[f32], k: &[f32], v: &[f32], layout: &Layout, dims: Dims) -> (Buf, Buf) {
    let d = dims.head_dim;
    let (qw, kvw) = (dims.q_width(), dims.kv_width());
    let scale = 1.0 / (d as f32).sqrt();
    let mut lse = Buf::stale(dims.heads * dims.rows);
    // The output head-major, so that each task's block is one contiguous slice.
    let mut by_head = Buf::stale(dims.heads * dims.rows * d);
    // One task per (query head, segment, query tile), owning its rows of `by_head` and of `lse`.
    let mut tasks = Vec::new();
    for (h, (out_parts, lse_parts)) in by_head_and_segment(&mut by_head, layout, d)
        .into_iter()
        .zip(by_head_and_segment(&mut lse, layout, 1))
        .enumerate()
    {
        for ((seg, out_seg), lse_seg) in layout.segments.iter().zip(out_parts).zip(lse_parts) {
            let tiles = out_seg.chunks_mut(QUERY_TILE * d).zip(lse_seg.chunks_mut(QUERY_TILE));
            tasks.extend(tiles.enumerate().map(|(qt, (out, lse))| (h, *seg, qt, out, lse)));
        }
    }
    tasks.into_par_iter().for_each(|(h, seg, qt, out_tile, lse_tile)| {
        let kv = h / dims.groups();
        let (i0, i1) = tile_rows(seg, qt);
        let rows = i1 - i0;
        let q_tile = tile(q, seg, h, i0..i1, dims, qw);
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
                for (row, &c) in out_tile.chunks_mut(d).zip(&rescale) {
                    row.iter_mut().for_each(|o| *o *= c);
                }
            }
            // The first block of keys writes the output, the rest add to it.
            matmul(out_tile, d, j0 > 0, Mat::rows(s, rows, cols), tile(v, seg, kv, j0..j1, dims, kvw), false);
        }
        for (r, (row, l)) in out_tile.chunks_mut(d).zip(lse_tile.iter_mut()).enumerate() {
            let inv = 1.0 / sum[r];
            row.iter_mut().for_each(|o| *o *= inv);
            *l = max[r] + sum[r].ln();
        }
    });
    (lse, heads_to_rows(&by_head, dims.heads, dims.rows, d))
}

/// What [`backward`] reads of the forward pass: its inputs, output and log-sum-exps.
pub(super) struct Saved<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
}

/// The blocks of the gradients one backward task owns: its segment's rows of one kv head's `dk` and
/// `dv`, and of its query heads' `dq` (all head-major).
struct GradBlocks<'a> {
    seg: Segment,
    kv: usize,
    dq: Vec<&'a mut [f32]>,
    dk: &'a mut [f32],
    dv: &'a mut [f32],
}

/// `(dq, dk, dv)` of [`forward`] given the gradient `d_out` at its output.
pub(super) fn backward(d_out: &[f32], saved: Saved, layout: &Layout, dims: Dims) -> (Buf, Buf, Buf) {
    let Saved { q, k, v, out, lse } = saved;
    let (d, groups) = (dims.head_dim, dims.groups());
    let (qw, kvw) = (dims.q_width(), dims.kv_width());
    let scale = 1.0 / (d as f32).sqrt();
    // dq, dk and dv (head-major) all accumulate over blocks (dk and dv over the query heads of a group too).
    let mut dq = Buf::zeros(q.len());
    let mut dk = Buf::zeros(k.len());
    let mut dv = Buf::zeros(v.len());
    // One task per (segment, kv head): it owns that kv head's dk, dv and its query heads' dq there.
    let mut tasks = Vec::with_capacity(layout.segments.len() * dims.kv_heads);
    let (mut dq_parts, mut dk_parts, mut dv_parts) = (
        by_head_and_segment(&mut dq, layout, d),
        by_head_and_segment(&mut dk, layout, d),
        by_head_and_segment(&mut dv, layout, d),
    );
    for &seg in &layout.segments {
        for kv in 0..dims.kv_heads {
            let dq = (kv * groups..(kv + 1) * groups).map(|h| next_block(&mut dq_parts, h)).collect();
            tasks.push(GradBlocks {
                seg,
                kv,
                dq,
                dk: next_block(&mut dk_parts, kv),
                dv: next_block(&mut dv_parts, kv),
            });
        }
    }
    tasks.into_par_iter().for_each(|GradBlocks { seg, kv, mut dq, dk, dv }| {
        let mut probs = vec![0f32; QUERY_TILE * KEY_TILE];
        let mut d_scores = vec![0f32; QUERY_TILE * KEY_TILE];
        let mut delta = vec![0f32; QUERY_TILE];
        for (g, dq) in dq.iter_mut().enumerate() {
            let h = kv * groups + g;
            for qt in 0..seg.len.div_ceil(QUERY_TILE) {
                let (i0, i1) = tile_rows(seg, qt);
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
                    // dv += pᵀ · dO; dq += ds · k; dk += dsᵀ · q.
                    matmul(&mut dv[j0 * d..j1 * d], d, true, p.t(), do_tile, false);
                    matmul(&mut dq[i0 * d..i1 * d], d, true, ds, k_tile, false);
                    matmul(&mut dk[j0 * d..j1 * d], d, true, ds.t(), q_tile, false);
                }
            }
        }
    });
    (
        heads_to_rows(&dq, dims.heads, dims.rows, d),
        heads_to_rows(&dk, dims.kv_heads, dims.rows, d),
        heads_to_rows(&dv, dims.kv_heads, dims.rows, d),
    )
}
