//! Where a `tag` run's output goes: standard output, a stream, a file written as `OUT.partial` and
//! renamed to OUT when complete, or a directory (brat). `--resume` continues a partial file: its
//! complete lines are kept, a torn last line is cut off, and the ids it holds are skipped.

use crate::fsutil::{create_parent, is_stream, partial_path, write_target, PartialDir};
use anyhow::Context;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Where the output lines go. A file is written as OUT.partial and renamed to OUT when the run is
/// complete, so an interrupted run never leaves a half-written OUT (and `--resume` continues the
/// partial file); standard output and streams (a FIFO, `/dev/stdout`) are written as they come.
pub enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    Stream {
        file: File,
        path: PathBuf,
    },
    Partial {
        file: File,
        partial: PathBuf,
        target: PathBuf,
        /// The mode of the OUT being replaced, kept.
        mode: Option<std::fs::Permissions>,
    },
    /// A directory of files (brat), written whole.
    Dir(PartialDir),
}

impl Sink {
    /// Opens `--out` (with `resume`: what an earlier run left, and the ids it holds).
    pub fn open(out: &Path, resume: bool) -> anyhow::Result<(Sink, Done)> {
        let (target, existing) = write_target(out)?;
        if existing.as_ref().is_some_and(is_stream) {
            anyhow::ensure!(
                !resume,
                "--out {}: --resume needs a regular file, not a stream",
                out.display()
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&target)
                .with_context(|| format!("{}: cannot open for writing", out.display()))?;
            let path = out.to_path_buf();
            return Ok((Sink::Stream { file, path }, Done::default()));
        }
        create_parent(&target)?;
        let partial = partial_path(&target);
        let mode = existing.as_ref().map(|m| m.permissions());
        let (file, done) = if resume {
            // Continue the partial file, or else what OUT holds (complete, or torn by an older
            // newstag), copied into the partial file: OUT stays as it is until the run is complete.
            let from = if partial.exists() || existing.is_none() {
                &partial
            } else {
                &target
            };
            open_for_resume(from, &partial)?
        } else {
            if partial.exists() {
                eprintln!(
                    "warning: {}: left by an interrupted run; starting afresh (--resume would continue it)",
                    partial.display()
                );
            }
            let file = File::create(&partial)
                .with_context(|| format!("{}: cannot create", partial.display()))?;
            (file, Done::default())
        };
        let sink = Sink::Partial {
            file,
            partial,
            target,
            mode,
        };
        Ok((sink, done))
    }

    pub fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let (out, name): (&mut dyn Write, String) = match self {
            Sink::Stdout(s) => (s, "standard output".into()),
            Sink::Stream { file, path } => (file, path.display().to_string()),
            Sink::Partial { file, partial, .. } => (file, partial.display().to_string()),
            Sink::Dir(_) => return Ok(()),
        };
        out.write_all(bytes)
            .and_then(|_| out.flush())
            .with_context(|| format!("{name}: cannot write"))
    }

    /// Writes one file of a directory output.
    pub fn write_file(&mut self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Sink::Dir(dir) => dir.write(name, bytes),
            _ => Ok(()),
        }
    }

    /// Makes the output whole: the partial file, synced, becomes OUT (with OUT's old mode).
    pub fn finish(self) -> anyhow::Result<()> {
        if let Sink::Dir(dir) = self {
            return dir.finish();
        }
        if let Sink::Partial {
            file,
            partial,
            target,
            mode,
        } = self
        {
            if let Some(mode) = mode {
                let _ = file.set_permissions(mode);
            }
            file.sync_all()
                .with_context(|| format!("{}: cannot write", partial.display()))?;
            std::fs::rename(&partial, &target).with_context(|| {
                format!(
                    "{}: cannot rename to {}",
                    partial.display(),
                    target.display()
                )
            })?;
            if let Some(dir) = target.parent().and_then(|d| File::open(d).ok()) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// Drops an output that received nothing, leaving OUT as it was.
    pub fn discard(self) {
        match self {
            Sink::Partial { partial, .. } => {
                let _ = std::fs::remove_file(partial);
            }
            Sink::Dir(dir) => dir.discard(),
            _ => {}
        }
    }
}

/// Ids already in the output (kept by --resume), in order, with whether each line was an error.
#[derive(Debug, Default)]
pub struct Done {
    pub ids: HashMap<String, VecDeque<bool>>,
}

/// The id of a complete output line, and whether it records an error.
fn complete_record(line: &[u8]) -> Option<(String, bool)> {
    let body = line.strip_suffix(b"\n")?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id")?.as_str()?.to_string();
    Some((id, value.get("error").is_some()))
}

/// Opens an output file to resume: keeps every complete line (newline-terminated JSON with an id),
/// cuts off a torn tail, and positions for appending. A damaged line followed by good ones is an
/// error, and the file is left untouched: that is not what an interrupted run leaves. The file read
/// is `path`; once it checks out, it is copied to `append_to` (the partial file) when that differs,
/// and only the copy is cut and appended to.
fn open_for_resume(path: &Path, append_to: &Path) -> anyhow::Result<(File, Done)> {
    let mut done = Done::default();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = File::create(append_to)
                .with_context(|| format!("{}: cannot create", append_to.display()))?;
            return Ok((f, done));
        }
        Err(e) => return Err(anyhow::anyhow!("{}: cannot read: {e}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let (mut good_end, mut offset, mut lineno) = (0u64, 0u64, 0usize);
    let mut first_bad: Option<usize> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        offset += n as u64;
        match (complete_record(&line), first_bad) {
            (Some((id, error)), None) => {
                done.ids.entry(id).or_default().push_back(error);
                good_end = offset;
            }
            (Some(_), Some(bad)) => anyhow::bail!(
                "{}:{bad}: not a complete JSON line with an id, yet line {lineno} after it is: the file is damaged, not merely cut short; repair it or tag afresh without --resume",
                path.display()
            ),
            (None, None) => first_bad = Some(lineno),
            (None, Some(_)) => {}
        }
    }
    if path != append_to {
        // A copy: OUT stays whole under its name until the resumed run replaces it.
        std::fs::copy(path, append_to).with_context(|| {
            format!("{}: cannot copy to {}", path.display(), append_to.display())
        })?;
    }
    if let Some(bad) = first_bad {
        eprintln!(
            "warning: {}:{bad}: cut off {} byte(s) of incomplete output; those articles are tagged again",
            path.display(),
            offset - good_end
        );
        OpenOptions::new()
            .write(true)
            .open(append_to)
            .and_then(|f| f.set_len(good_end))
            .with_context(|| format!("{}: cannot truncate", append_to.display()))?;
    }
    let file = OpenOptions::new()
        .append(true)
        .open(append_to)
        .with_context(|| format!("{}: cannot open for appending", append_to.display()))?;
    Ok((file, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume(content: &[u8]) -> (anyhow::Result<Done>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, content).unwrap();
        let result = open_for_resume(&p, &p).map(|(mut f, done)| {
            f.write_all(b"NEXT\n").unwrap();
            done
        });
        (result, std::fs::read(&p).unwrap())
    }

    #[test]
    fn resume_keeps_complete_lines_and_cuts_a_torn_tail() {
        let (done, after) =
            resume(b"{\"id\": \"a\", \"entities\": []}\n{\"id\": \"b\", \"error\": \"x\"}\n{\"id\": \"c\", \"ent");
        let done = done.unwrap();
        assert_eq!(
            after,
            b"{\"id\": \"a\", \"entities\": []}\n{\"id\": \"b\", \"error\": \"x\"}\nNEXT\n"
        );
        assert_eq!(done.ids["a"], [false]);
        assert_eq!(done.ids["b"], [true]);
        assert!(!done.ids.contains_key("c"));
        // A complete-looking record without its newline is cut too: it may be short of bytes.
        let (_, after) = resume(b"{\"id\": \"a\"}\n{\"id\": \"b\"}");
        assert_eq!(after, b"{\"id\": \"a\"}\nNEXT\n");
        // Zeros left by a crash count as a torn tail.
        let (_, after) = resume(b"{\"id\": \"a\"}\n\0\0\0\n\0\0");
        assert_eq!(after, b"{\"id\": \"a\"}\nNEXT\n");
        let (done, after) = resume(b"");
        assert!(done.unwrap().ids.is_empty());
        assert_eq!(after, b"NEXT\n");
    }

    #[test]
    fn resume_refuses_a_damaged_middle() {
        let (done, after) = resume(b"{\"id\": \"a\"}\ngarbage\n{\"id\": \"b\"}\n");
        let err = done.unwrap_err().to_string();
        assert!(
            err.contains("out.jsonl:2: not a complete JSON line"),
            "{err}"
        );
        assert_eq!(
            after, b"{\"id\": \"a\"}\ngarbage\n{\"id\": \"b\"}\n",
            "left untouched"
        );
    }
}
