//! How the training process gets its memory.

/// Keeps freed memory in the process instead of handing it back to the system at once.
///
/// A training step allocates and frees hundreds of feature-map-sized buffers (52 MB each for
/// the first layers of MobileNet-0.25 at batch 8, 640×640). glibc serves every allocation
/// above 32 MB with a fresh `mmap` and unmaps it on free, so each buffer is page-faulted in
/// again: filling 52 MB took 33 ms fresh against 3.5 ms reused, and the whole step 2.03 s
/// against 1.81 s (`examples/profile_step.rs`, 2 threads). With the heap serving everything
/// and never trimmed, the process keeps its peak (the step's own peak, about 3 GB at batch 8,
/// 640×640) until it exits. Call once at start-up, before the threads start; a no-op off
/// glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
