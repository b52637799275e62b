//! Float buffers that the training pass reuses from one step to the next.
//!
//! A step allocates the same few hundred activation buffers as the step before. Fresh allocations of
//! that size are fresh pages from the kernel (a page fault and a zero-fill per 4 KiB), and zeroing
//! costs another pass over memory that is about to be overwritten; a pool of returned buffers
//! avoids both. It holds at most what one step used, until the process ends.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Buffers kept beyond this many are freed instead.
const MAX_POOLED: usize = 4096;

/// A float buffer that returns to the pool when dropped.
pub struct Buf(Vec<f32>);

impl Buf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Buf {
        let mut buf = Buf::stale(len);
        buf.fill(0.0);
        buf
    }

    /// `len` values left from an earlier use (or zeros): for outputs written in full before they are read.
    pub fn stale(len: usize) -> Buf {
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // The smallest buffer that fits: the same sizes recur every step.
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| v.capacity() >= len)
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        match reused {
            Some(mut v) => {
                v.resize(len, 0.0); // shrinks, or zero-fills only the part never used
                Buf(v)
            }
            None => Buf(vec![0.0; len]),
        }
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if pool.len() < MAX_POOLED {
            pool.push(v);
        }
    }
}
