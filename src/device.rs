//! Device selection: `cpu`, `cuda[:N]` (cargo feature `cuda`), `metal` (cargo feature `metal`).

use candle_core::Device;

/// Parses a device name; asking for a device this build lacks is a clear error.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => (
            k,
            i.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("device {spec:?}: {i:?} is not a device number"))?,
        ),
        None => (spec, 0),
    };
    match kind {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => Ok(Device::new_cuda(index)?),
        "cuda" => anyhow::bail!("device {spec:?}: this newstag was built without CUDA support (rebuild with `--features cuda`)"),
        "metal" if cfg!(feature = "metal") => Ok(Device::new_metal(index)?),
        "metal" => anyhow::bail!("device {spec:?}: this newstag was built without Metal support (rebuild with `--features metal`)"),
        _ => anyhow::bail!("unknown device {spec:?} (expected cpu, cuda, cuda:N or metal)"),
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn devices() {
        assert!(super::parse_device("cpu").unwrap().is_cpu());
        let err = super::parse_device("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device"));
        if !cfg!(feature = "cuda") {
            assert!(super::parse_device("cuda:1")
                .unwrap_err()
                .to_string()
                .contains("--features cuda"));
        }
    }
}
