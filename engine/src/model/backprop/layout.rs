//! The rows of a right-padded batch laid end to end, so that no computation is spent on padding
//! (variable-length attention, as verl's `use_remove_padding` and FlashAttention's `varlen` kernels do).
//!
//! Row `b` of a `[B, T]` batch holds `lengths[b]` real tokens; packed, they become the segment
//! `starts[b]..starts[b] + lengths[b]` of one sequence of `Σ lengths` positions. Every layer except
//! attention works position by position, so it is unchanged; attention keeps each segment's causal
//! block to itself, and rope counts positions from 0 at each segment's start. The per-token numbers
//! the caller sees (log-probs, weights, entropies) stay in the padded `[B, T-1]` layout, with 0 at the
//! positions that predict padding.

use anyhow::{bail, Result};

/// One batch row's place in the packed sequence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    /// The packed position of the row's first token.
    pub start: usize,
    /// Its real tokens.
    pub len: usize,
}

/// Where every row of a `[batch, time]` batch lies once packed.
pub(crate) struct Layout {
    pub batch: usize,
    pub time: usize,
    pub segments: Vec<Segment>,
    /// Σ lengths: the packed sequence's positions.
    pub rows: usize,
    /// The position within its segment of each packed row (rope's position).
    pub positions: Vec<usize>,
}

impl Layout {
    /// `lengths[b]` real tokens at the start of row `b` (each at least 1 and at most `time`).
    pub fn new(batch: usize, time: usize, lengths: &[usize]) -> Result<Layout> {
        if lengths.len() != batch {
            bail!("{} row lengths for a batch of {batch} rows", lengths.len());
        }
        if let Some((b, &len)) = lengths.iter().enumerate().find(|&(_, &len)| len == 0 || len > time) {
            bail!("row {b} has length {len}: each row needs 1 to {time} tokens");
        }
        let mut segments = Vec::with_capacity(batch);
        let mut positions = Vec::with_capacity(lengths.iter().sum());
        for &len in lengths {
            segments.push(Segment { start: positions.len(), len });
            positions.extend(0..len);
        }
        Ok(Layout { batch, time, segments, rows: positions.len(), positions })
    }

    /// The real tokens of `[B, T]` ids, end to end.
    pub fn pack_ids(&self, ids: &[u32]) -> Vec<u32> {
        let mut packed = Vec::with_capacity(self.rows);
        for (b, s) in self.segments.iter().enumerate() {
            packed.extend_from_slice(&ids[b * self.time..b * self.time + s.len]);
        }
        packed
    }

    /// Each packed row's [`crate::model::dropout::token_key`] (its batch row and position), so that the
    /// packed pass draws the dropout masks the padded autograd pass draws.
    pub fn token_keys(&self) -> Vec<u64> {
        let mut keys = Vec::with_capacity(self.rows);
        for (b, s) in self.segments.iter().enumerate() {
            keys.extend((0..s.len).map(|pos| crate::model::dropout::token_key(b, pos)));
        }
        keys
    }

    /// Whether packed row `r` is the last of its segment (it predicts no token).
    pub fn ends_segment(&self, r: usize) -> bool {
        r + 1 == self.rows || self.positions[r + 1] == 0
    }

    /// A value per packed row → the padded `[B, T-1]` layout (a segment's last row, and padding, get 0).
    pub fn unpack<T: Copy + Default>(&self, per_row: &[T]) -> Vec<T> {
        let width = self.time - 1;
        let mut out = vec![T::default(); self.batch * width];
        for (b, s) in self.segments.iter().enumerate() {
            let n = s.len - 1;
            out[b * width..b * width + n].copy_from_slice(&per_row[s.start..s.start + n]);
        }
        out
    }

    /// Values in the padded `[B, T-1]` layout → one per packed row (a segment's last row gets 0;
    /// values at padded positions are dropped).
    pub fn pack(&self, padded: &[f32]) -> Vec<f32> {
        let width = self.time - 1;
        let mut out = vec![0f32; self.rows];
        for (b, s) in self.segments.iter().enumerate() {
            let n = s.len - 1;
            out[s.start..s.start + n].copy_from_slice(&padded[b * width..b * width + n]);
        }
        out
    }
}
