//! Scratch space reused across calls, a pointer several threads write disjoint parts of, and the
//! run-time choice of instruction set for our own loops.

use std::cell::RefCell;
use std::mem::{ManuallyDrop, MaybeUninit};

thread_local! {
    // One im2col / column-gradient buffer and one gather buffer per thread, kept between calls:
    // a ResNet step asks for the same sizes over and over, and fresh large buffers cost a page
    // fault per 4 KiB (shared/FACTS.md: ~17% of a step).
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with this thread's two scratch buffers, resized to `a` and `b` elements (contents
/// unspecified: callers overwrite what they read).
///
/// The buffers are taken out while `f` runs: a rayon worker waiting inside `f` may run another
/// kernel call on this thread, which then simply gets fresh buffers.
pub fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    let [mut x, mut y] = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if x.len() < a {
        x.resize(a, 0.0);
    }
    if y.len() < b {
        y.resize(b, 0.0);
    }
    let r = f(&mut x[..a], &mut y[..b]);
    SCRATCH.with(|s| *s.borrow_mut() = [x, y]);
    r
}

/// A raw output pointer shared by tasks that each write their own, disjoint part of it.
#[derive(Clone, Copy)]
pub struct SharedOut(pub *mut f32);

// SAFETY: every user writes only the indices its task owns; no two tasks share an element.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The part `[start, start + len)` as a slice.
    ///
    /// # Safety
    /// No other task may access that range while the slice lives, and it must be in bounds.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// A kernel's output, allocated without being zeroed: zeroing would be one more pass over memory
/// (~4% of a training step, measured), and every kernel writes each element anyway. It stays
/// `MaybeUninit` until [`Output::assume_init`], as `Vec`'s contract requires.
pub struct Output(Vec<MaybeUninit<f32>>);

impl Output {
    /// `len` values, not yet written.
    pub fn new(len: usize) -> Self {
        let mut v = Vec::with_capacity(len);
        // SAFETY: `MaybeUninit` elements need no initialisation.
        unsafe { v.set_len(len) };
        Self(v)
    }

    /// Where tasks write it.
    pub fn shared(&mut self) -> SharedOut {
        SharedOut(self.0.as_mut_ptr().cast())
    }

    /// The values.
    ///
    /// # Safety
    /// Every element must have been written.
    pub unsafe fn assume_init(self) -> Vec<f32> {
        let mut v = ManuallyDrop::new(self.0);
        // SAFETY: same layout and allocation; the caller vouches every element is written.
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) }
    }
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512, AVX2 + FMA, else
/// baseline), picked at run time: the crate is built for baseline x86-64, whose loops vectorise
/// only 4 wide. What `f` calls must be `#[inline(always)]` to be compiled the same way.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}
