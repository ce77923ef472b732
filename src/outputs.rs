//! What a run will write, checked against what it reads before it writes anything.
//!
//! Every path is resolved first (symbolic links, `..`, and hard links by device and inode), so
//! `--out ./x/../a.jsonl`, a link to the input or a second name of the same file are all seen for
//! what they are. An output is refused, naming both flags, when it is also an input, would replace
//! a part of a model directory the run reads (a report beside the model is fine), would be read as
//! an input of a directory the run reads, or is another output of the same run. Outputs that are
//! streams (`/dev/stdout`, a FIFO) are written to, never replaced, and so never conflict.

use crate::fsutil::{is_stream, write_target};
use std::path::{Component, Path, PathBuf};

/// Flags and paths of one run: what it reads and what it writes.
#[derive(Debug, Default)]
pub struct RunPaths {
    reads: Vec<Entry>,
    writes: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    /// How the user named it: `--out`, `--data`, `an input`.
    flag: String,
    given: PathBuf,
    kind: Kind,
    at: Location,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A file read or written whole.
    File,
    /// A directory whose `.txt` and `.jsonl` files are read (tag's inputs).
    InputDir,
    /// A model directory: every file in it belongs to the model.
    ModelDir,
    /// A training run's directory, written by newstag.
    RunDir,
}

/// Where a path really is.
#[derive(Debug)]
struct Location {
    /// Absolute, with links and `..` resolved as far as the path exists.
    path: PathBuf,
    /// Device and inode of what exists there (hard links share them).
    id: Option<(u64, u64)>,
    /// A device, FIFO or socket: written as a stream.
    stream: bool,
}

impl Location {
    fn of(path: &Path) -> anyhow::Result<Location> {
        let (target, meta) = write_target(path)?;
        let path = resolve(&target)?;
        Ok(Location {
            path,
            id: meta.as_ref().and_then(file_id),
            stream: meta.as_ref().is_some_and(is_stream),
        })
    }

    fn same(&self, other: &Location) -> bool {
        self.path == other.path || (self.id.is_some() && self.id == other.id)
    }

    fn inside(&self, dir: &Location) -> bool {
        self.path != dir.path && self.path.starts_with(&dir.path)
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// The absolute path: the longest existing prefix canonicalised, the rest resolved lexically.
fn resolve(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot resolve: {e}", path.display()))?;
    let mut resolved = PathBuf::new();
    let mut exists = true;
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            c => {
                resolved.push(c);
                if exists {
                    match resolved.canonicalize() {
                        Ok(real) => resolved = real,
                        Err(_) => exists = false,
                    }
                }
            }
        }
    }
    Ok(resolved)
}

/// What a model or run directory is made of: a report beside them (`--json RUN/test.json`) is
/// fine, replacing one of them is not.
const MODEL_PARTS: [&str; 8] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "training_args.json",
    "metrics.jsonl",
    "checkpoints",
    "curves.svg",
    "index.html",
];

/// Is `path` (inside the model directory `dir`) one of its parts or under one?
fn is_model_part(path: &Path, dir: &Path) -> bool {
    path.strip_prefix(dir)
        .ok()
        .and_then(|rel| rel.components().next())
        .is_some_and(|first| MODEL_PARTS.iter().any(|p| first.as_os_str() == *p))
}

fn is_input_name(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("txt" | "jsonl")
    )
}

impl RunPaths {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, write: bool, flag: &str, path: &Path, kind: Kind) -> anyhow::Result<()> {
        let entry = Entry {
            flag: flag.to_string(),
            given: path.to_path_buf(),
            kind,
            at: Location::of(path)?,
        };
        if write {
            self.writes.push(entry);
        } else {
            self.reads.push(entry);
        }
        Ok(())
    }

    /// The run reads this file (or, for a directory, its `.txt` and `.jsonl` files); `-` is stdin.
    pub fn reads(&mut self, flag: &str, path: &Path) -> anyhow::Result<()> {
        if path.as_os_str() == "-" {
            return Ok(());
        }
        let kind = if path.is_dir() {
            Kind::InputDir
        } else {
            Kind::File
        };
        self.add(false, flag, path, kind)
    }

    /// The run reads the model in this directory.
    pub fn reads_model(&mut self, flag: &str, dir: &Path) -> anyhow::Result<()> {
        self.add(false, flag, dir, Kind::ModelDir)
    }

    /// The run writes (or replaces) this file.
    pub fn writes(&mut self, flag: &str, path: &Path) -> anyhow::Result<()> {
        self.add(true, flag, path, Kind::File)
    }

    /// The run writes a training run into this directory.
    pub fn writes_run(&mut self, flag: &str, dir: &Path) -> anyhow::Result<()> {
        self.add(true, flag, dir, Kind::RunDir)
    }

    /// Refuses the first conflict found, naming both flags and paths.
    pub fn check(&self) -> anyhow::Result<()> {
        for (i, out) in self.writes.iter().enumerate() {
            if out.at.stream {
                continue;
            }
            let (o, od) = (&out.flag, out.given.display());
            if out.kind == Kind::File && out.given.is_dir() {
                anyhow::bail!("{o} {od}: is a directory; give a file name");
            }
            if out.kind == Kind::RunDir && out.given.exists() && !out.given.is_dir() {
                anyhow::bail!("{o} {od}: is a file; a run is written into a directory");
            }
            for other in &self.writes[..i] {
                if !other.at.stream && out.at.same(&other.at) {
                    anyhow::bail!(
                        "{o} {od} and {} {} are the same file: each output needs its own path",
                        other.flag,
                        other.given.display()
                    );
                }
            }
            for input in &self.reads {
                let (r, rd) = (&input.flag, input.given.display());
                let refuse = |why: &str| {
                    anyhow::anyhow!(
                        "{o} {od} {why} {r} {rd}: newstag never overwrites what it reads; choose another {o}"
                    )
                };
                match (out.kind, input.kind) {
                    _ if out.at.same(&input.at) => {
                        return Err(refuse(if input.kind == Kind::ModelDir {
                            "is the directory of"
                        } else {
                            "is the same file as"
                        }))
                    }
                    (Kind::RunDir, Kind::ModelDir) if out.at.inside(&input.at) => {
                        return Err(refuse("lies inside the model directory"))
                    }
                    (Kind::File, Kind::ModelDir)
                        if is_model_part(&out.at.path, &input.at.path) =>
                    {
                        return Err(refuse("lies inside the model directory"))
                    }
                    (Kind::File, Kind::InputDir)
                        if out.at.path.parent() == Some(input.at.path.as_path())
                            && is_input_name(&out.at.path) =>
                    {
                        return Err(refuse("would be read back as an input: it lies in"))
                    }
                    (Kind::RunDir, Kind::File | Kind::InputDir | Kind::ModelDir)
                        if input.at.inside(&out.at) =>
                    {
                        return Err(anyhow::anyhow!(
                            "{r} {rd} lies inside the run directory {o} {od}: newstag never overwrites what it reads; choose another {o}"
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn paths(reads: &[(&str, &Path)], writes: &[(&str, &Path)]) -> anyhow::Result<()> {
        let mut run = RunPaths::new();
        for (flag, p) in reads {
            if flag.starts_with("--model") || flag.starts_with("--base") {
                run.reads_model(flag, p)?;
            } else {
                run.reads(flag, p)?;
            }
        }
        for (flag, p) in writes {
            if *flag == "--run" {
                run.writes_run(flag, p)?;
            } else {
                run.writes(flag, p)?;
            }
        }
        run.check()
    }

    fn refused(result: anyhow::Result<()>, expect: &str) {
        let err = result.expect_err(expect).to_string();
        assert!(err.contains(expect), "{err}");
    }

    #[test]
    fn an_output_that_is_an_input_under_any_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("articles.jsonl");
        std::fs::write(&input, "{}\n").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        symlink(&input, d.join("link.jsonl")).unwrap();
        std::fs::hard_link(&input, d.join("hard.jsonl")).unwrap();
        for out in [
            input.clone(),
            d.join("sub/../articles.jsonl"),
            d.join("./articles.jsonl"),
            d.join("link.jsonl"),
            d.join("hard.jsonl"),
        ] {
            refused(
                paths(&[("the input", &input)], &[("--out", &out)]),
                "is the same file as the input",
            );
        }
        paths(&[("the input", &input)], &[("--out", &d.join("new.jsonl"))]).unwrap();
    }

    #[test]
    fn outputs_of_one_run_must_differ_and_streams_never_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        refused(paths(&[], &[("--out", &out), ("--html", &out)]), "--html");
        let dev = Path::new("/dev/null");
        paths(&[("the input", dev)], &[("--json", dev), ("--html", dev)]).unwrap();
    }

    #[test]
    fn model_and_input_directories_are_protected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let model = d.join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        refused(
            paths(
                &[("--model", &model)],
                &[("--json", &model.join("config.json"))],
            ),
            "lies inside the model directory --model",
        );
        refused(
            paths(&[("--base", &model)], &[("--run", &model)]),
            "is the directory of --base",
        );
        // A report beside the model's files is fine; under its checkpoints it is not.
        paths(
            &[("--model", &model)],
            &[("--json", &model.join("test-report.json"))],
        )
        .unwrap();
        refused(
            paths(
                &[("--model", &model)],
                &[("--json", &model.join("checkpoints/x.json"))],
            ),
            "lies inside the model directory",
        );
        refused(
            paths(
                &[("--train", &d.join("run/train.jsonl"))],
                &[("--run", &d.join("run"))],
            ),
            "lies inside the run directory",
        );
        let inputs = d.join("articles");
        std::fs::create_dir(&inputs).unwrap();
        refused(
            paths(
                &[("the input", &inputs)],
                &[("--out", &inputs.join("tagged.jsonl"))],
            ),
            "would be read back as an input: it lies in",
        );
        // A page beside the articles is not read back as an article.
        paths(
            &[("the input", &inputs)],
            &[("--html", &inputs.join("page.html"))],
        )
        .unwrap();
        refused(paths(&[], &[("--out", d)]), "is a directory");
    }
}
