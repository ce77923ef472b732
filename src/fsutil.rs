//! Output files are written whole or not at all: a temp file beside the target, fsync, rename.
//!
//! What the user's path names is respected: a symbolic link is written through (its target is
//! replaced, the link stays), a device or FIFO (`/dev/stdout`, `<(cmd)`) is written to as a
//! stream, and a new file gets the usual mode (0666 less the umask) while a replaced one keeps its
//! own.

use anyhow::Context;
use std::fs::{Metadata, OpenOptions, Permissions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Links followed before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Where a write to `path` lands: the path itself or, through symbolic links, their final target,
/// and what is there now (`None`: nothing yet). A dangling link resolves to the file it names.
pub fn write_target(path: &Path) -> anyhow::Result<(PathBuf, Option<Metadata>)> {
    // A stream is opened by the name given: `/dev/stdout` links to `/proc/self/fd/1`, which links
    // to names such as `pipe:[1234]` that only the kernel can follow.
    if let Ok(meta) = std::fs::metadata(path) {
        if is_stream(&meta) {
            return Ok((path.to_path_buf(), Some(meta)));
        }
    }
    let mut target = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&target)
                    .with_context(|| format!("{}: cannot read the link", target.display()))?;
                target = match target.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(m) => return Ok((target, Some(m))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((target, None)),
            Err(e) => anyhow::bail!("{}: {e}", target.display()),
        }
    }
    anyhow::bail!(
        "{}: more than {MAX_LINKS} symbolic links in a row",
        path.display()
    )
}

/// Is this an output that is written as a stream (a device, FIFO or socket) rather than replaced?
pub fn is_stream(meta: &Metadata) -> bool {
    !meta.is_file() && !meta.is_dir()
}

/// Creates the directory that will hold `path`, if missing.
pub fn create_parent(path: &Path) -> anyhow::Result<&Path> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    Ok(dir)
}

/// Asks for the mode a new file gets from open(2): 0666, less the umask. (tempfile's own default
/// is 0600, which would hide a shared model or report from the team.)
#[cfg(unix)]
fn usual_mode(builder: &mut tempfile::Builder) {
    use std::os::unix::fs::PermissionsExt;
    builder.permissions(Permissions::from_mode(0o666));
}

#[cfg(not(unix))]
fn usual_mode(_builder: &mut tempfile::Builder) {}

/// Writes `bytes` to `path` atomically (see the module comment for links and streams).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let (target, existing) = write_target(path)?;
    if let Some(meta) = &existing {
        anyhow::ensure!(
            !meta.is_dir(),
            "{}: is a directory, not a file",
            path.display()
        );
        if is_stream(meta) {
            let mut out = OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("{}: cannot open for writing", path.display()))?;
            return out
                .write_all(bytes)
                .and_then(|_| out.flush())
                .with_context(|| format!("{}: cannot write", path.display()));
        }
    }
    let dir = create_parent(&target)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".newstag-").suffix(".tmp");
    // A replaced file keeps its mode; a new one gets what open(2) would give it (the umask
    // applies to the mode asked for at creation).
    match &existing {
        Some(meta) => {
            builder.permissions(meta.permissions());
        }
        None => usual_mode(&mut builder),
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a temp file", dir.display()))?;
    if let Some(meta) = &existing {
        // The umask applied at creation; set the replaced file's bits exactly.
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))?;
    tmp.persist(&target).map_err(|e| {
        anyhow::anyhow!("{}: cannot rename into place: {}", path.display(), e.error)
    })?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `value` as pretty JSON atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Copies a file atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
    write_atomic(to, &bytes)
}

/// A directory written whole or not at all: files go into `DIR.partial`, which becomes `DIR` when
/// [`PartialDir::finish`] is called. `DIR` must not exist or be empty: newstag never replaces a
/// directory of files it did not write.
pub struct PartialDir {
    partial: PathBuf,
    target: PathBuf,
}

impl PartialDir {
    /// Starts writing `dir` (a `DIR.partial` left by an interrupted run is started afresh).
    pub fn open(dir: &Path) -> anyhow::Result<PartialDir> {
        if dir.exists() {
            let empty = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none());
            anyhow::ensure!(
                dir.is_dir() && empty,
                "{}: {}: the files go into a new or empty directory",
                dir.display(),
                if dir.is_dir() {
                    "not empty"
                } else {
                    "is a file"
                }
            );
        }
        let partial = partial_path(dir);
        if partial.is_dir() {
            eprintln!(
                "warning: {}: left by an interrupted run; starting afresh",
                partial.display()
            );
            std::fs::remove_dir_all(&partial)
                .with_context(|| format!("{}: cannot remove", partial.display()))?;
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("{}: cannot create directory", partial.display()))?;
        Ok(PartialDir {
            partial,
            target: dir.to_path_buf(),
        })
    }

    /// Writes one file (a plain name) into the directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let p = self.partial.join(name);
        let mut f =
            std::fs::File::create(&p).with_context(|| format!("{}: cannot create", p.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("{}: cannot write", p.display()))
    }

    /// Renames the partial directory into place.
    pub fn finish(self) -> anyhow::Result<()> {
        if self.target.is_dir() {
            std::fs::remove_dir(&self.target)
                .with_context(|| format!("{}: cannot replace", self.target.display()))?;
        }
        std::fs::rename(&self.partial, &self.target).with_context(|| {
            format!(
                "{}: cannot rename to {}",
                self.partial.display(),
                self.target.display()
            )
        })
    }

    /// Drops what was written, leaving `DIR` as it was.
    pub fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.partial);
    }
}

/// `PATH.partial`, beside `PATH`: where an output (a file or a directory) is written until it is
/// complete.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn new_files_get_the_usual_mode_and_replaced_files_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_atomic(&p, b"one").unwrap();
        // The umask of the test process decides; compare with a file made by open(2).
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert_eq!(mode(&p), mode(&plain));
        assert_ne!(mode(&p), 0o600, "not tempfile's private mode");
        std::fs::set_permissions(&p, Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(mode(&p), 0o640);
    }

    #[test]
    fn symbolic_links_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("real")).unwrap();
        std::fs::write(d.join("real/out.json"), b"old").unwrap();
        std::os::unix::fs::symlink("real/out.json", d.join("link.json")).unwrap();
        write_atomic(&d.join("link.json"), b"new").unwrap();
        assert!(std::fs::symlink_metadata(d.join("link.json"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(d.join("real/out.json")).unwrap(), b"new");
        // A dangling link is written through too: its target comes into being.
        std::os::unix::fs::symlink("real/later.json", d.join("later.json")).unwrap();
        write_atomic(&d.join("later.json"), b"x").unwrap();
        assert_eq!(std::fs::read(d.join("real/later.json")).unwrap(), b"x");
        // A loop of links is an error, not a hang.
        std::os::unix::fs::symlink("b", d.join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.join("b")).unwrap();
        let err = write_atomic(&d.join("a"), b"x").unwrap_err().to_string();
        assert!(err.contains("symbolic links in a row"), "{err}");
    }

    #[test]
    fn devices_are_written_as_streams() {
        // /dev/null is a character device: written to, never renamed over.
        write_atomic(Path::new("/dev/null"), b"discarded").unwrap();
        assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
        let dir = tempfile::tempdir().unwrap();
        let err = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
