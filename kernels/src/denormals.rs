//! Flush-to-zero and denormals-are-zero: numbers below f32's normal range (about 1e-38) read
//! and computed as zero, as `torch.set_flush_denormal(True)` makes PyTorch do. x86-64 CPUs
//! compute on denormals through a microcode assist that can be a hundred times slower, and a
//! fine-tune whose loss nears zero produces them (a step of PyTorch's took 10 s instead of 0.45
//! with them, issue 35). The setting is per thread (the MXCSR register), so it is made on this
//! thread and on every thread of the pool our kernels and burn-flex compute on.

/// Sets FTZ and DAZ on this thread and (with flex) on every thread of rayon's global pool;
/// returns whether this CPU has them (x86-64 only).
pub fn flush_denormals() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        set_ftz_daz();
        #[cfg(feature = "flex")]
        rayon::broadcast(|_| set_ftz_daz());
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

#[cfg(target_arch = "x86_64")]
fn set_ftz_daz() {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr and ldmxcsr read and write this thread's SSE control word through a
    // pointer to a local; setting FTZ and DAZ changes only how denormals are rounded. (The
    // `_mm_setcsr` intrinsics are deprecated in favour of this.)
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        csr |= FTZ_DAZ;
        core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
    }
}

/// Whether FTZ and DAZ are set on this thread.
pub fn flushing() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: as in `set_ftz_daz`, a read of this thread's control word into a local.
        unsafe {
            core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
        }
        csr & FTZ_DAZ == FTZ_DAZ
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    // On threads of their own: the test runner's threads and rayon's global pool, which other
    // tests compute on, keep their defaults.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn denormals_read_as_zero_once_flushed_and_only_on_the_threads_set() {
        std::thread::spawn(|| {
            let tiny = std::hint::black_box(1e-40f32);
            assert!(tiny > 0.0 && !tiny.is_normal(), "a denormal to begin with");
            assert!(!flushing());
            set_ftz_daz();
            assert!(flushing());
            // DAZ: the denormal input reads as zero; FTZ: a denormal result becomes zero.
            assert_eq!(std::hint::black_box(tiny) * 1.0, 0.0);
            let small = std::hint::black_box(1e-30f32);
            assert_eq!(small * std::hint::black_box(1e-10f32), 0.0);
        })
        .join()
        .unwrap();
        assert!(!flushing(), "only the thread that set it flushes");
    }

    #[cfg(all(target_arch = "x86_64", feature = "flex"))]
    #[test]
    fn a_broadcast_sets_every_thread_of_a_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert!(pool.broadcast(|_| flushing()).iter().all(|f| !f));
        pool.broadcast(|_| set_ftz_daz());
        assert!(pool.broadcast(|_| flushing()).iter().all(|f| *f));
    }
}
