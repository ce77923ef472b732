//! How the process runs its compute: the thread count, the thread the work runs on, and the
//! allocator's reuse of large buffers. The CLI calls [`set_up`] before any other thread starts and
//! runs each command [`on_compute_threads`]; `Predictor` and `AdamW` tune the allocator themselves
//! for library users (the first to do so decides).

/// What the process mostly does, which decides how the allocator keeps memory
/// ([`tune_allocator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Optimiser steps: one arena.
    Training,
    /// Forward passes (`tag`, `eval`, `serve`): an arena per compute thread.
    Inference,
}

/// Fixes the thread count and tunes the allocator for `workload` ([`fix_thread_count`],
/// [`tune_allocator`]).
///
/// # Safety
/// Sets an environment variable: call it before the process starts any other thread.
pub unsafe fn set_up(workload: Workload) {
    // SAFETY: the caller's promise.
    unsafe { fix_thread_count() };
    tune_allocator(workload);
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
/// them to the system, from as few arenas as `workload` runs well with (once per process, the
/// first call deciding; a no-op elsewhere). Training steps and inference batches allocate and
/// free the same large activation buffers over and over: by default each is a fresh `mmap` whose
/// every page faults in and is zeroed by the kernel, about a sixth of a training step's time and
/// a fifth of inference's on CPU. glibc's default of eight arenas per core would hold a working
/// set in each. Inference takes one per compute thread: with a single one its threads queued on
/// the arena's lock (`serve` at 64 clients answered 1,243-1,326 requests/s against 1,436-1,472
/// with two arenas on two threads, int8 `tag` ran 5% slower), for a peak over 10,000 articles
/// within 4% either way. Training takes one: with two, 60 steps of 32 sentences peaked at 1.37 GB
/// against 1.04-1.08, at the same speed.
pub fn tune_allocator(workload: Workload) {
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
            let arenas = match workload {
                Workload::Training => 1,
                Workload::Inference => compute_threads().clamp(1, c_int::MAX as usize) as c_int,
            };
            // SAFETY: mallopt only adjusts allocator parameters; every value is in range (the
            // mmap threshold's maximum on 64-bit glibc is 32 MiB).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 256 << 20);
                mallopt(M_ARENA_MAX, arenas);
            }
        });
    }
}

/// The compute pool's thread count: `RAYON_NUM_THREADS` where set (as [`fix_thread_count`]
/// sets it), else the count candle picks. Read without starting the pool.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn compute_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(candle_core::utils::get_num_threads)
}
