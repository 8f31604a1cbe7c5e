//! A global allocator that wraps the system one and watches the case being run.
//!
//! While a case is armed on a thread, every allocation and reallocation made by that thread
//! updates the thread's largest single request. A request above [`HARD_CAP`] is refused
//! (the allocator returns null) after a message naming the request and the input file has
//! been written straight to stderr: Rust then aborts, which is the point — a hostile length
//! must never be able to take the machine down, and the input is left on disk to replay.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The largest single allocation any case may ask for, whatever the input.
pub const HARD_CAP: usize = 1 << 30;

pub struct Watched;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// The input file of this thread's case, for the message printed before an abort (a
    /// fixed buffer: nothing may be allocated on that path).
    static INPUT: Cell<([u8; INPUT_MAX], usize)> = const { Cell::new(([0; INPUT_MAX], 0)) };
}

const INPUT_MAX: usize = 512;

fn note(size: usize) -> bool {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    let armed = ARMED.try_with(Cell::get).unwrap_or(false);
    if !armed {
        return true;
    }
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    if size > HARD_CAP {
        refuse(size);
        return false;
    }
    true
}

fn refuse(size: usize) {
    let mut buf = [0u8; 1024];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"\nwhetstone-fuzz: FINDING: an allocation of ");
    let mut digits = [0u8; 20];
    let mut d = digits.len();
    let mut s = size;
    loop {
        d -= 1;
        digits[d] = b'0' + (s % 10) as u8;
        s /= 10;
        if s == 0 {
            break;
        }
    }
    put(&digits[d..]);
    put(b" bytes (over the 1 GiB hard cap) was refused; the input is ");
    let (input, len) = INPUT.try_with(Cell::get).unwrap_or(([0; INPUT_MAX], 0));
    put(&input[..len]);
    put(b"\n");
    // SAFETY: writing a stack buffer to stderr; no allocation.
    unsafe { libc_write(2, buf.as_ptr(), n) };
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, count: usize) -> isize;
}

unsafe impl GlobalAlloc for Watched {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !note(layout.size()) {
            return std::ptr::null_mut();
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !note(new_size) {
            return std::ptr::null_mut();
        }
        System.realloc(ptr, layout, new_size)
    }
}

/// Start watching this thread's allocations for a case whose input lives at `input`.
pub fn arm(input: &str) {
    let bytes = input.as_bytes();
    let len = bytes.len().min(INPUT_MAX);
    let mut buf = [0u8; INPUT_MAX];
    buf[..len].copy_from_slice(&bytes[..len]);
    INPUT.with(|i| i.set((buf, len)));
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
}

/// Stop watching; returns the largest single allocation since [`arm`].
pub fn disarm() -> usize {
    ARMED.with(|a| a.set(false));
    LARGEST.with(Cell::get)
}
