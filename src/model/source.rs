//! Where a base model comes from: a local directory, or a Hugging Face hub id resolved through
//! hf-hub's cache (downloading where the network allows it).

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The files a model directory needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// Resolves `spec` to a directory holding [`MODEL_FILES`]. A path that exists wins; otherwise a
/// spec of the form `org/name` is a hub id, looked up in `cache` (default: hf-hub's, honouring
/// `HF_HOME`).
pub fn resolve_model_dir(spec: &str, cache: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        anyhow::ensure!(
            path.is_dir(),
            "{spec}: a model is a directory with {}",
            MODEL_FILES.join(", ")
        );
        return Ok(path.to_path_buf());
    }
    let parts: Vec<&str> = spec.split('/').collect();
    let looks_like_hub_id =
        parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'));
    anyhow::ensure!(
        looks_like_hub_id,
        "{spec}: no such model directory (and not a hub id of the form org/name)"
    );
    let builder = match cache {
        Some(c) => hf_hub::api::sync::ApiBuilder::new().with_cache_dir(c.to_path_buf()),
        None => hf_hub::api::sync::ApiBuilder::from_env(),
    };
    let api = builder
        .with_progress(false)
        .build()
        .context("cannot set up the Hugging Face hub client")?;
    let repo = api.model(spec.to_string());
    let mut dir = None;
    for file in MODEL_FILES {
        let p = repo.get(file).with_context(|| {
            format!("{spec}: cannot get {file} from the Hugging Face hub or its cache")
        })?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| anyhow::anyhow!("{spec}: hub cache returned no directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_id_resolves_from_a_prefilled_cache() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--acme--tiny-bert");
        let snap = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in MODEL_FILES {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        let dir = resolve_model_dir("acme/tiny-bert", Some(cache.path())).unwrap();
        assert_eq!(dir, snap);
    }

    #[test]
    fn unknown_paths_say_so() {
        let err = resolve_model_dir("./nowhere", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such model directory"), "{err}");
    }
}
