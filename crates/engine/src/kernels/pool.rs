//! Reusable `f32` buffers for the explicit training path. A step takes the same buffer
//! sizes as the step before it (same batch shape), so buffers handed back after one step's
//! backward pass serve the next step's forward pass: after the first step no activation
//! buffer is allocated, zeroed or page-faulted again (the arena llm.c sizes once). Buffers
//! are kept by capacity and a request takes the smallest that fits it within 2×, so batches
//! of varying length reuse them too; the pool never holds more than twice the most that was
//! ever out at once, so shapes that keep changing cannot pile buffers up.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Free buffers by capacity, and how much is out and held, in values.
#[derive(Debug, Default)]
struct Pool {
    free: BTreeMap<usize, Vec<Vec<f32>>>,
    /// Values held in `free`.
    pooled: usize,
    /// Values in buffers handed out and not yet returned, and the most there ever were.
    live: usize,
    peak_live: usize,
}

impl Pool {
    /// A buffer of length `n`: the smallest free one that holds `n` without wasting more
    /// than half of itself, else a new one.
    fn take(&mut self, n: usize) -> Vec<f32> {
        let fit = self
            .free
            .range_mut(n..=n.saturating_mul(2))
            .find(|(_, v)| !v.is_empty())
            .and_then(|(_, v)| v.pop());
        let v = match fit {
            Some(mut v) => {
                self.pooled -= v.capacity();
                if v.len() >= n {
                    v.truncate(n);
                } else {
                    v.resize(n, 0.0);
                }
                v
            }
            None => vec![0.0; n],
        };
        self.live += v.capacity();
        self.peak_live = self.peak_live.max(self.live);
        v
    }

    /// Keep `v` for reuse, unless the pool already holds twice the most that was ever out at
    /// once: batches of changing shapes (unpacked rows of varying length) then free what no
    /// longer fits instead of piling up a buffer per shape.
    fn give(&mut self, v: Vec<f32>) {
        let cap = v.capacity();
        self.live = self.live.saturating_sub(cap);
        if self.pooled + cap > 2 * self.peak_live {
            return;
        }
        self.pooled += cap;
        self.free.entry(cap).or_default().push(v);
    }
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// A pooled buffer: returned to the pool when dropped.
#[derive(Debug, Default)]
pub struct Buf(Vec<f32>);

/// A buffer of `n` values whose contents are unspecified (a previous step's): for outputs
/// that are written in full before they are read.
pub fn take(n: usize) -> Buf {
    match POOL.lock() {
        Ok(mut g) => Buf(g.get_or_insert_with(Pool::default).take(n)),
        Err(_) => Buf(vec![0.0; n]),
    }
}

/// A buffer of `n` zeros.
pub fn zeros(n: usize) -> Buf {
    let mut b = take(n);
    b.0.fill(0.0);
    b
}

/// Free every pooled buffer (after training, so the memory goes back).
pub fn clear() {
    if let Ok(mut g) = POOL.lock() {
        *g = None;
    }
}

/// Calls [`clear`] when dropped (held by a training run).
pub struct ClearOnDrop;

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        clear();
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        if let Ok(mut g) = POOL.lock() {
            g.get_or_insert_with(Pool::default).give(v);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_reused_and_zeros_are_zero() {
        let n = 12_345;
        let mut a = take(n);
        a[0] = 7.0;
        let ptr = a.as_ptr();
        drop(a);
        let b = take(n);
        assert_eq!(b.as_ptr(), ptr);
        drop(b);
        let z = zeros(n);
        assert!(z.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn varying_shapes_reuse_buffers_and_the_pool_stays_bounded() {
        let mut p = Pool::default();
        // one step's worth: a few buffers out at once, then all back
        let step = |p: &mut Pool, n: usize| {
            let bufs: Vec<Vec<f32>> = (0..4).map(|i| p.take(n * (i + 1))).collect();
            for (i, b) in bufs.iter().enumerate() {
                assert_eq!(b.len(), n * (i + 1));
            }
            for b in bufs {
                p.give(b);
            }
        };
        step(&mut p, 1000);
        let first = p.pooled;
        // a shorter batch takes the same buffers (no new allocation: the pool empties)
        let short = p.take(900);
        assert_eq!(short.capacity(), 1000);
        p.give(short);
        assert_eq!(p.pooled, first);
        // many distinct, growing shapes: held memory stays within twice the peak in use
        for n in (1000..40_000).step_by(1300) {
            step(&mut p, n);
            assert!(
                p.pooled <= 2 * p.peak_live,
                "{} > 2 x {}",
                p.pooled,
                p.peak_live
            );
        }
        assert_eq!(p.live, 0);
    }
}
