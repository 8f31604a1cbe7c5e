//! Reusable `f32` buffers for the explicit training path. A step takes the same buffer
//! sizes as the step before it (same batch shape), so buffers handed back after one step's
//! backward pass serve the next step's forward pass: after the first step no activation
//! buffer is allocated, zeroed or page-faulted again (the arena llm.c sizes once, kept here
//! by size so a new batch shape simply adds buffers).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

static FREE: Mutex<Option<HashMap<usize, Vec<Vec<f32>>>>> = Mutex::new(None);

/// A pooled buffer: returned to the pool when dropped.
#[derive(Debug, Default)]
pub struct Buf(Vec<f32>);

/// A buffer of `n` values whose contents are unspecified (a previous step's): for outputs
/// that are written in full before they are read.
pub fn take(n: usize) -> Buf {
    let reused = FREE
        .lock()
        .ok()
        .and_then(|mut g| g.as_mut().and_then(|m| m.get_mut(&n)).and_then(|v| v.pop()));
    Buf(reused.unwrap_or_else(|| vec![0.0; n]))
}

/// A buffer of `n` zeros.
pub fn zeros(n: usize) -> Buf {
    let mut b = take(n);
    b.0.fill(0.0);
    b
}

/// Free every pooled buffer (after training, so the memory goes back).
pub fn clear() {
    if let Ok(mut g) = FREE.lock() {
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
        if v.is_empty() {
            return;
        }
        if let Ok(mut g) = FREE.lock() {
            g.get_or_insert_with(HashMap::new)
                .entry(v.len())
                .or_default()
                .push(v);
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
}
