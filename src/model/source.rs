//! Where a base model comes from: a local directory, or a Hugging Face hub id resolved through
//! hf-hub's cache (downloading where the network allows it, and never with `HF_HUB_OFFLINE` set).

use std::path::{Path, PathBuf};

/// The files a model directory needs.
pub const MODEL_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

/// How hub ids are resolved: which cache, and whether the network may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hub {
    /// hf-hub's cache directory (the one holding `models--ORG--NAME`).
    pub cache: PathBuf,
    /// Only the cache is looked at (`HF_HUB_OFFLINE`).
    pub offline: bool,
}

impl Hub {
    /// The cache and mode the environment asks for: `HF_HOME/hub` (else
    /// `~/.cache/huggingface/hub`, as hf-hub and the Python `huggingface_hub` use), offline when
    /// `HF_HUB_OFFLINE` is `1`, `true`, `yes` or `on`.
    pub fn from_env() -> anyhow::Result<Self> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let cache = match (var("HF_HOME"), var("HOME")) {
            (Some(home), _) => PathBuf::from(home).join("hub"),
            (None, Some(home)) => PathBuf::from(home).join(".cache/huggingface/hub"),
            (None, None) => anyhow::bail!(
                "cannot tell where the Hugging Face cache is (neither HF_HOME nor HOME is set): set HF_HOME, or pass a local model directory"
            ),
        };
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.to_string_lossy().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Ok(Hub { cache, offline })
    }
}

/// Resolves `spec` to a directory holding [`MODEL_FILES`]: a path that exists, else a hub id of
/// the form `org/name` looked up as [`Hub::from_env`] says, in `cache` when one is given.
pub fn resolve_model_dir(spec: &str, cache: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = local_dir(spec)? {
        return Ok(dir);
    }
    let mut hub = Hub::from_env()?;
    if let Some(c) = cache {
        hub.cache = c.to_path_buf();
    }
    resolve_hub_id(spec, &hub)
}

/// [`resolve_model_dir`] with the hub settings given.
pub fn resolve_with(spec: &str, hub: &Hub) -> anyhow::Result<PathBuf> {
    match local_dir(spec)? {
        Some(dir) => Ok(dir),
        None => resolve_hub_id(spec, hub),
    }
}

/// The directory `spec` names, if it exists; an error when it can only have meant a local path.
fn local_dir(spec: &str) -> anyhow::Result<Option<PathBuf>> {
    let path = Path::new(spec);
    if path.exists() {
        anyhow::ensure!(
            path.is_dir(),
            "{spec}: a model is a directory with {}",
            MODEL_FILES.join(", ")
        );
        return Ok(Some(path.to_path_buf()));
    }
    let parent_exists = path
        .parent()
        .is_some_and(|p| !p.as_os_str().is_empty() && p.is_dir());
    if looks_like_path(spec) || parent_exists || !looks_like_hub_id(spec) {
        let mut message = format!("{spec}: no such directory");
        if let Some(close) = close_sibling(path) {
            message.push_str(&format!(" (did you mean {}?)", close.display()));
        } else if spec.starts_with('~') {
            message.push_str(" (~ is expanded by the shell only where a word starts with it: write $HOME instead)");
        } else if !looks_like_path(spec) && !parent_exists {
            message.push_str(" (and not a Hugging Face hub id of the form ORG/NAME)");
        }
        anyhow::bail!(message);
    }
    Ok(None)
}

/// A spec only a local path can be: `./x`, `/x`, `~/x`, `x/`, `a/b/c`, `a\b`.
fn looks_like_path(spec: &str) -> bool {
    spec.starts_with(['.', '/', '~'])
        || spec.ends_with('/')
        || spec.matches('/').count() > 1
        || spec.contains('\\')
}

/// `ORG/NAME`, each part non-empty.
fn looks_like_hub_id(spec: &str) -> bool {
    spec.split_once('/')
        .is_some_and(|(org, name)| !org.is_empty() && !name.is_empty())
}

/// A directory beside `path` whose name is within two edits of its name.
fn close_sibling(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in std::fs::read_dir(parent).ok()?.flatten() {
        let other = entry.file_name();
        let Some(other) = other.to_str() else {
            continue;
        };
        let distance = strsim::levenshtein(name, other);
        let is_dir = entry.path().is_dir();
        if is_dir && distance <= 2 && best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((distance, path.with_file_name(other)));
        }
    }
    best.map(|(_, p)| p)
}

/// What to do when a hub id cannot be had from the cache.
fn how_to_prefill(spec: &str, hub: &Hub) -> String {
    format!(
        "on a machine with network, run `huggingface-cli download {spec}` and copy its Hugging Face cache (~/.cache/huggingface) here as HF_HOME (this run looks in {}), or pass a local model directory",
        hub.cache.display()
    )
}

/// The snapshot directory of hub id `spec`: from the cache only when offline, else from the cache
/// or the hub.
fn resolve_hub_id(spec: &str, hub: &Hub) -> anyhow::Result<PathBuf> {
    let files: Vec<PathBuf> = if hub.offline {
        let repo = hf_hub::Cache::new(hub.cache.clone()).model(spec.to_string());
        let mut files = Vec::new();
        for file in MODEL_FILES {
            match repo.get(file) {
                Some(p) => files.push(p),
                None => anyhow::bail!(
                    "{spec}: {file} is not in the Hugging Face cache, and HF_HUB_OFFLINE is set, so the hub was not asked: {}",
                    how_to_prefill(spec, hub)
                ),
            }
        }
        files
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_cache_dir(hub.cache.clone())
            .with_progress(false)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the Hugging Face hub client: {e}"))?;
        let repo = api.model(spec.to_string());
        let mut files = Vec::new();
        for file in MODEL_FILES {
            match repo.get(file) {
                Ok(p) => files.push(p),
                Err(e) => anyhow::bail!(
                    "{spec}: cannot get {file} from the Hugging Face hub ({e}): check that {spec} is a model id on huggingface.co and that this machine reaches it; without network, set HF_HUB_OFFLINE=1 and {}",
                    how_to_prefill(spec, hub)
                ),
            }
        }
        files
    };
    let dir = files[0]
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{spec}: the hub cache gave no directory"))?;
    // hf-hub puts every file of one revision in one snapshot directory.
    anyhow::ensure!(
        files.iter().all(|f| f.parent() == Some(dir)),
        "{spec}: the files of the cached model lie in different snapshot directories of {}",
        hub.cache.display()
    );
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefilled_cache(cache: &Path) -> PathBuf {
        let repo = cache.join("models--acme--tiny-bert");
        let snap = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in MODEL_FILES {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        snap
    }

    fn offline(cache: &Path) -> Hub {
        Hub {
            cache: cache.to_path_buf(),
            offline: true,
        }
    }

    #[test]
    fn hub_id_resolves_from_a_prefilled_cache() {
        let cache = tempfile::tempdir().unwrap();
        let snap = prefilled_cache(cache.path());
        assert_eq!(
            resolve_with("acme/tiny-bert", &offline(cache.path())).unwrap(),
            snap
        );
        // Online, a complete cache entry is used without asking the hub.
        let online = Hub {
            offline: false,
            ..offline(cache.path())
        };
        assert_eq!(resolve_with("acme/tiny-bert", &online).unwrap(), snap);
    }

    #[test]
    fn offline_a_cache_miss_says_how_to_prefill_it() {
        let cache = tempfile::tempdir().unwrap();
        let snap = prefilled_cache(cache.path());
        std::fs::remove_file(snap.join("tokenizer.json")).unwrap();
        for spec in ["acme/tiny-bert", "acme/other"] {
            let err = resolve_with(spec, &offline(cache.path()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("is not in the Hugging Face cache, and HF_HUB_OFFLINE is set")
                    && err.contains(&format!("`huggingface-cli download {spec}`"))
                    && err.contains("or pass a local model directory"),
                "{err}"
            );
        }
    }

    #[test]
    fn mistyped_paths_are_not_hub_ids() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        std::fs::create_dir_all(runs.join("conll")).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let hub = offline(cache.path());
        let err = |spec: &str| resolve_with(spec, &hub).unwrap_err().to_string();

        // The parent exists: a typo of a sibling, which is suggested.
        let spec = runs.join("conl");
        let e = err(spec.to_str().unwrap());
        assert!(
            e.ends_with(&format!(
                "conl: no such directory (did you mean {}?)",
                runs.join("conll").display()
            )),
            "{e}"
        );
        for spec in [
            "./nowhere",
            "/nowhere/at/all",
            "acme/tiny/",
            "a/b/c",
            "a\\b",
            "nowhere",
        ] {
            let e = err(spec);
            assert!(e.starts_with(&format!("{spec}: no such directory")), "{e}");
            assert!(!e.contains("cache"), "{e}");
        }
        assert!(err("nowhere").contains("not a Hugging Face hub id of the form ORG/NAME"));
        assert!(err("~/models/x").contains("write $HOME instead"));
        // A file is not a model directory.
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, "x").unwrap();
        assert!(err(file.to_str().unwrap()).contains("a model is a directory with"));
    }
}
