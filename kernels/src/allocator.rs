//! The allocator the train, infer and benchmark binaries use, set up to keep freed memory.
//!
//! A ResNet step frees and re-allocates the same large buffers op after op. glibc hands every
//! buffer over 32 MiB back to the OS, and mimalloc by default decommits freed memory after a
//! second; either way the next op faults in fresh zeroed pages, which cost a quarter of a flex
//! training step here (kernel `clear_page`, measured with perf).

/// mimalloc: declare it with `#[global_allocator]` in a binary and call [`keep_freed_pages`].
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (mimalloc.h, v3), not exported by the Rust bindings.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed memory to the OS: the process keeps its peak, which a
/// training or serving process reaches on its first step anyway.
pub fn keep_freed_pages() {
    // SAFETY: setting an option is allowed at any time; -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        keep_freed_pages();
        // SAFETY: reading an option is allowed at any time.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, -1);
        // The option after it (use_numa_nodes) keeps its default of 0: we set the right index.
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY + 1) },
            0
        );
    }
}
