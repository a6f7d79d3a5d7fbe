//! Handing freed heap memory back to the system.
//!
//! Start-up and reloads parse whole files and queue a message per namespace; at 10,000
//! namespaces that is tens of megabytes freed a moment later, which glibc keeps mapped, so the
//! resident size would stay at the start-up peak for the life of the process.

/// Returns free heap pages to the system (glibc's `malloc_trim`); a no-op elsewhere.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes the
    // allocator's own locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
