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
