//! Inputs for tagging: `.txt` files (one article each), JSONL files with `id` and `text`,
//! directories of those, and `-` for standard input. Articles are streamed in input order, so
//! memory stays flat however many there are.

use super::jsonl::{parse_line, ReadOptions};
use super::{Article, DataError};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// One input article, or the reason it could not be read (the batch goes on without it).
#[derive(Debug)]
pub enum InputItem {
    Article(Article),
    Failed { id: String, error: String },
}

impl InputItem {
    pub fn id(&self) -> &str {
        match self {
            InputItem::Article(a) => &a.id,
            InputItem::Failed { id, .. } => id,
        }
    }
}

enum Source {
    Text(PathBuf),
    Jsonl(PathBuf),
    Stdin,
}

/// Streams articles from a list of input paths.
pub struct Inputs {
    pending: VecDeque<Source>,
    current: Option<(PathBuf, Box<dyn BufRead>, usize)>,
    /// Files passed over inside directories (neither `.txt` nor `.jsonl`).
    pub skipped: Vec<PathBuf>,
}

impl Inputs {
    /// Resolves paths (expanding directories, sorted) without reading any article yet.
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<Inputs> {
        let mut pending = VecDeque::new();
        let mut skipped = Vec::new();
        for p in paths {
            if p.as_os_str() == "-" {
                pending.push_back(Source::Stdin);
            } else if p.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| anyhow::anyhow!("{}: cannot list directory: {e}", p.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                entries.sort();
                for e in entries {
                    match source_for(&e) {
                        Some(s) => pending.push_back(s),
                        None => skipped.push(e),
                    }
                }
            } else if p.is_file() {
                pending.push_back(source_for(p).unwrap_or_else(|| Source::Text(p.clone())));
            } else {
                anyhow::bail!("{}: no such file or directory", p.display());
            }
        }
        Ok(Inputs {
            pending,
            current: None,
            skipped,
        })
    }
}

fn source_for(p: &Path) -> Option<Source> {
    match p.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => Some(Source::Jsonl(p.to_path_buf())),
        Some("txt") => Some(Source::Text(p.to_path_buf())),
        _ => None,
    }
}

/// Reads a whole text file as one article, refusing binary and empty files.
fn text_article(id: String, bytes: Vec<u8>) -> InputItem {
    let failed = |error: String| InputItem::Failed {
        id: id.clone(),
        error,
    };
    if bytes.contains(&0) {
        return failed("binary file (contains NUL bytes)".into());
    }
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => rest.to_vec(),
        None => bytes,
    };
    match String::from_utf8(bytes) {
        Ok(text) if text.trim().is_empty() => failed("empty article".into()),
        Ok(text) => InputItem::Article(Article::from_text(id, text)),
        Err(e) => failed(format!(
            "invalid UTF-8 at byte {}",
            e.utf8_error().valid_up_to()
        )),
    }
}

impl Iterator for Inputs {
    type Item = InputItem;

    fn next(&mut self) -> Option<InputItem> {
        loop {
            if let Some((path, reader, lineno)) = &mut self.current {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => self.current = None,
                    Ok(_) => {
                        *lineno += 1;
                        let raw = line.strip_suffix(b"\n").unwrap_or(&line);
                        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                        let raw = if *lineno == 1 {
                            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
                        } else {
                            raw
                        };
                        if raw.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        let opts = ReadOptions {
                            schema: None,
                            require_id: false,
                        };
                        let (id, parsed) = parse_line(path, *lineno, raw, opts);
                        let id = id.unwrap_or_else(|| format!("{}:{lineno}", path.display()));
                        return Some(match parsed {
                            Ok(a) if a.text.trim().is_empty() => InputItem::Failed {
                                id,
                                error: "empty article".into(),
                            },
                            Ok(a) => InputItem::Article(a),
                            Err(problems) => InputItem::Failed {
                                id,
                                error: problems_text(&problems),
                            },
                        });
                    }
                    Err(e) => {
                        let id = format!("{}:{}", path.display(), *lineno + 1);
                        self.current = None;
                        return Some(InputItem::Failed {
                            id,
                            error: format!("read error: {e}"),
                        });
                    }
                }
                continue;
            }
            match self.pending.pop_front()? {
                Source::Text(p) => {
                    let id = p.display().to_string();
                    return Some(match std::fs::read(&p) {
                        Ok(bytes) => text_article(id, bytes),
                        Err(e) => InputItem::Failed {
                            id,
                            error: format!("cannot read: {e}"),
                        },
                    });
                }
                Source::Jsonl(p) => match File::open(&p) {
                    Ok(f) => self.current = Some((p, Box::new(BufReader::new(f)), 0)),
                    Err(e) => {
                        return Some(InputItem::Failed {
                            id: p.display().to_string(),
                            error: format!("cannot read: {e}"),
                        })
                    }
                },
                Source::Stdin => {
                    let mut reader = BufReader::new(std::io::stdin());
                    let starts_json = match reader.fill_buf() {
                        Ok(buf) => buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
                        Err(_) => false,
                    };
                    if starts_json {
                        self.current = Some((PathBuf::from("-"), Box::new(reader), 0));
                    } else {
                        let mut bytes = Vec::new();
                        return Some(match reader.read_to_end(&mut bytes) {
                            Ok(_) => text_article("-".into(), bytes),
                            Err(e) => InputItem::Failed {
                                id: "-".into(),
                                error: format!("cannot read stdin: {e}"),
                            },
                        });
                    }
                }
            }
        }
    }
}

fn problems_text(problems: &[DataError]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_text_jsonl_and_directories_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.txt"), "\u{feff}Tokayev met Mirziyoyev.").unwrap();
        std::fs::write(
            d.join("b.jsonl"),
            "{\"id\": \"x\", \"text\": \"Oil\"}\n\n{\"text\": \"\"}\nnope\n",
        )
        .unwrap();
        std::fs::write(d.join("c.bin"), [0u8, 1, 2]).unwrap();
        std::fs::write(d.join("d.txt"), [0xffu8, 0xfe]).unwrap();
        std::fs::write(d.join("e.txt"), "  \n").unwrap();
        let inputs = Inputs::open(&[d.to_path_buf()]).unwrap();
        let items: Vec<InputItem> = inputs.collect();
        let summary: Vec<(String, bool)> = items
            .iter()
            .map(|i| {
                (
                    i.id().rsplit('/').next().unwrap().to_string(),
                    matches!(i, InputItem::Article(_)),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a.txt".into(), true),
                ("x".into(), true),
                ("b:3".into(), false),
                ("b.jsonl:4".into(), false),
                ("d.txt".into(), false),
                ("e.txt".into(), false)
            ]
        );
        if let InputItem::Article(a) = &items[0] {
            assert_eq!(a.text, "Tokayev met Mirziyoyev.");
        }
    }
}
