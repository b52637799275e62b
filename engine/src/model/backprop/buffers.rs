//! Float buffers that the training pass reuses from one step to the next.
//!
//! A step allocates the same few hundred activation buffers as the step before. Fresh allocations of
//! that size are fresh pages from the kernel (a page fault and a zero-fill per 4 KiB), and zeroing
//! costs another pass over memory that is about to be overwritten; a pool of returned buffers
//! avoids both. The pool keeps at most twice as many bytes as were ever handed out at once (one
//! step's activations; the slack absorbs best-fit mismatches between steps), so varying batch shapes
//! cannot make it grow without bound, and [`release`] empties it (after training).

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

struct Pool {
    free: Vec<Vec<f32>>,
    /// Bytes in `free`.
    pooled: usize,
    /// Bytes handed out and not yet returned, and the most there ever were.
    live: usize,
    peak_live: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { free: Vec::new(), pooled: 0, live: 0, peak_live: 0 });

fn pool() -> MutexGuard<'static, Pool> {
    // A panic while holding the lock leaves the pool's bookkeeping consistent enough to go on.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn bytes(v: &Vec<f32>) -> usize {
    v.capacity() * std::mem::size_of::<f32>()
}

impl Pool {
    /// A buffer of `len` values: the smallest pooled one that fits and is at most twice as large (the
    /// same sizes recur every step, give or take the batch's length; a much larger one handed out would
    /// keep the rest resident unused for as long as its new owner lives: an intermediate-sized buffer
    /// holding a hidden-sized activation on the tape), else a fresh one of zeros.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let v = match best {
            Some(i) => {
                let mut v = self.free.swap_remove(i);
                self.pooled -= bytes(&v);
                v.resize(len, 0.0); // shrinks, or zero-fills only the part never used
                v
            }
            None => vec![0.0; len],
        };
        self.live += bytes(&v);
        self.peak_live = self.peak_live.max(self.live);
        v
    }

    /// The most bytes the pool keeps.
    fn limit(&self) -> usize {
        2 * self.peak_live
    }

    /// Takes a buffer back. The pool holds no more than [`Pool::limit`]: to make room, smaller
    /// pooled buffers are freed first (larger ones serve more requests); a buffer that still does
    /// not fit is freed itself.
    fn give(&mut self, v: Vec<f32>) {
        let size = bytes(&v);
        self.live = self.live.saturating_sub(size);
        if size == 0 || size > self.limit() {
            return;
        }
        while self.pooled + size > self.limit() {
            let smallest = self.free.iter().enumerate().min_by_key(|(_, f)| f.capacity()).map(|(i, f)| (i, bytes(f)));
            match smallest {
                Some((i, freed)) if freed < size => {
                    self.free.swap_remove(i);
                    self.pooled -= freed;
                }
                _ => return,
            }
        }
        self.pooled += size;
        self.free.push(v);
    }
}

/// Frees every pooled buffer (buffers still in use return to the pool as usual).
pub fn release() {
    let mut pool = pool();
    pool.free = Vec::new();
    pool.pooled = 0;
    pool.peak_live = pool.live;
}

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
        Buf(pool().take(len))
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
        pool().give(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty() -> Pool {
        Pool { free: Vec::new(), pooled: 0, live: 0, peak_live: 0 }
    }

    #[test]
    fn returned_buffers_are_handed_out_again() {
        let mut pool = empty();
        let (a, b) = (pool.take(1000), pool.take(3000));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.pooled, 4000 * 4);
        let c = pool.take(900); // the smallest that fits
        assert_eq!((c.len(), c.as_ptr()), (900, pa));
        // A buffer more than twice as large as asked for is not handed out (the rest would stay
        // resident unused).
        let fresh = pool.take(1400);
        assert_ne!(fresh.as_ptr(), pb);
        let d = pool.take(2000);
        assert_eq!(d.as_ptr(), pb);
        assert_eq!((pool.pooled, pool.live), (0, (1000 + 1400 + 3000) * 4));
    }

    #[test]
    fn the_pool_never_holds_more_than_twice_what_was_in_use_at_once() {
        let mut pool = empty();
        // Growing shapes, one buffer in use at a time: each needs a fresh buffer, and the smaller
        // ones returned before are freed instead of piling up.
        for len in (1..50).map(|i| i * 4096) {
            let v = pool.take(len);
            assert!(v.iter().all(|&x| x == 0.0));
            pool.give(v);
            assert!(pool.pooled <= 2 * pool.peak_live, "{} pooled > 2 × {} peak", pool.pooled, pool.peak_live);
        }
        assert_eq!(pool.peak_live, 49 * 4096 * 4);
        let kept: Vec<usize> = pool.free.iter().map(|v| v.capacity() / 4096).collect();
        assert_eq!(kept, [48, 49], "only the largest buffers are kept");
    }
}
