//! How the process runs its compute: the thread count, the thread the work runs on, and the
//! allocator's reuse of large buffers. The CLI calls [`set_up`] before any other thread starts and
//! runs each command [`on_compute_threads`]; `Predictor` and `AdamW` tune the allocator themselves.

/// Fixes the thread count and tunes the allocator ([`fix_thread_count`], [`tune_allocator`]).
///
/// # Safety
/// Sets an environment variable: call it before the process starts any other thread.
pub unsafe fn set_up() {
    // SAFETY: the caller's promise.
    unsafe { fix_thread_count() };
    tune_allocator();
}

/// Fixes the CPU thread count for the rest of the process by setting `RAYON_NUM_THREADS` (when
/// unset) to the count candle would pick. candle asks for the count on every matrix product and,
/// without the variable, recounts physical cores from `/proc/cpuinfo` each time: about a tenth of
/// the time of small-batch inference.
///
/// # Safety
/// Sets an environment variable: call it before the process starts any other thread.
pub unsafe fn fix_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees no other thread reads or writes the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// Runs `f` on a thread of the pool that runs the parallel kernels and matrix products (rayon's;
/// `RAYON_NUM_THREADS` of them). The sequential work between kernels then takes a core of the
/// pool, instead of competing, as a thread of its own, with pool threads that spin between kernels:
/// on two cores that competition cost small-batch inference a third of its time.
pub fn on_compute_threads<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Makes glibc's allocator keep freed buffers of up to 32 MiB for reuse instead of returning
/// them to the system, from one arena (once per process; a no-op elsewhere). Training steps and
/// inference batches allocate and free the same large activation buffers over and over: by default
/// each is a fresh `mmap` whose every page faults in and is zeroed by the kernel, about a sixth of
/// a training step's time and a fifth of inference's on CPU. One arena instead of one per thread
/// keeps the memory this holds to one working set (`tag` over 10,000 articles: 462 MiB peak, against
/// 493 MiB with an arena per thread).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use std::os::raw::c_int;
            extern "C" {
                fn mallopt(param: c_int, value: c_int) -> c_int;
            }
            const M_TRIM_THRESHOLD: c_int = -1;
            const M_MMAP_THRESHOLD: c_int = -3;
            const M_ARENA_MAX: c_int = -8;
            // SAFETY: mallopt only adjusts allocator parameters; both values are in range (the
            // mmap threshold's maximum on 64-bit glibc is 32 MiB).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 256 << 20);
                mallopt(M_ARENA_MAX, 1);
            }
        });
    }
}
