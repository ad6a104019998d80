//! The code source of the unlabeled stream: Python source files (by default the standard
//! library Debian's `libpython3.11-stdlib` installs, which every machine with python3.11 has),
//! cut into chunks at blank lines and split into train and held-out parts by a hash of each
//! file's relative path (a whole file is on one side), like the general text.

use crate::general::{split_files, GeneralText};
use std::path::{Path, PathBuf};
use vpt_sdk::{Error, Result};

/// Where Debian's python3.11 installs its standard library.
pub const DEFAULT_ROOT: &str = "/usr/lib/python3.11";

fn py_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        // symlinks to directories (e.g. dist-packages) are not followed
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.is_dir() {
            py_files(&path, out)?;
        } else if meta.is_file() && path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
    Ok(())
}

/// Chunks of one source file: runs of blank-line separated blocks, each chunk closed before it
/// would pass `max_chars` (a longer block is cut at a line end, or at `max_chars`), kept when
/// at least `min_chars` long.
pub fn chunks(text: &str, min_chars: usize, max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut flush = |cur: &mut String| {
        if cur.trim().len() >= min_chars {
            out.push(std::mem::take(cur));
        }
        cur.clear();
    };
    for line in text.lines() {
        let blank = line.trim().is_empty();
        if blank && cur.len() >= max_chars / 2 {
            flush(&mut cur);
            continue;
        }
        if cur.len() + line.len() + 1 > max_chars {
            flush(&mut cur);
        }
        if cur.is_empty() && blank {
            continue;
        }
        let mut end = line.len().min(max_chars);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        cur.push_str(&line[..end]);
        cur.push('\n');
    }
    flush(&mut cur);
    out
}

/// Loads the chunks of the `.py` files under `root`; files whose path hash falls in the
/// lowest `heldout_percent` go to the held-out part.
pub fn load(
    root: &Path,
    heldout_percent: u64,
    min_chars: usize,
    max_chars: usize,
) -> Result<GeneralText> {
    if !root.is_dir() {
        return Err(Error::msg(format!(
            "code: {} is missing; set `task.config.code.root` to a directory of Python sources \
             (Debian's python3.11 installs its standard library at {DEFAULT_ROOT})",
            root.display()
        )));
    }
    let mut files = Vec::new();
    py_files(root, &mut files)?;
    split_files(root, files, heldout_percent, "code", |f| {
        // a few stdlib test files are not UTF-8 on purpose: skipped
        Ok(match std::fs::read_to_string(f) {
            Ok(text) => chunks(&text, min_chars, max_chars),
            Err(_) => Vec::new(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_break_at_blank_lines_and_respect_the_bounds() {
        let text = "import os\n\n\ndef f(x):\n    return x + 1\n\n\nclass A:\n    pass\n";
        assert_eq!(chunks(text, 1, 1000), vec![text.to_string()]);
        let small = chunks(text, 5, 24);
        assert!(small.iter().all(|c| c.len() <= 24), "{small:?}");
        assert!(small.iter().any(|c| c.contains("def f(x):")), "{small:?}");
        assert!(chunks("x = 1\n", 10, 100).is_empty());
    }

    #[test]
    fn missing_root_names_the_field() {
        let err = load(Path::new("/nonexistent/py"), 10, 50, 500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("task.config.code.root"), "{err}");
    }

    #[test]
    fn python_stdlib_splits_by_file() {
        let root = Path::new(DEFAULT_ROOT);
        if !root.is_dir() {
            eprintln!("skipping: {DEFAULT_ROOT} not installed");
            return;
        }
        let g = load(root, 10, 200, 1500).unwrap();
        assert!(
            g.train.len() > 1000 && g.heldout.len() > 50,
            "{} / {}",
            g.train.len(),
            g.heldout.len()
        );
        assert!(g.train.iter().all(|c| c.len() <= 1500));
        assert!(g.train.iter().any(|c| c.contains("def ")));
    }
}
