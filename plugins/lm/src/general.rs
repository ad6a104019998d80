//! The general-text stream for the "no degradation" check: prose paragraphs from the Debian
//! `python3.11-doc` reST sources, split into train and held-out parts by a hash of each file's
//! relative path (a whole file is on one side).

use std::path::{Path, PathBuf};
use vpt_sdk::rng::fnv1a;
use vpt_sdk::{Error, Result};

/// Where Debian's `python3.11-doc` installs the reST sources.
pub const DEFAULT_ROOT: &str = "/usr/share/doc/python3.11/html/_sources";

/// Train and held-out paragraphs.
#[derive(Debug, Clone, Default)]
pub struct GeneralText {
    /// Paragraphs for the unlabeled stream.
    pub train: Vec<String>,
    /// Paragraphs for `general_loss` (files never seen in training).
    pub heldout: Vec<String>,
}

fn rst_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            rst_files(&path, out)?;
        } else if path.to_string_lossy().ends_with(".rst.txt") {
            out.push(path);
        }
    }
    Ok(())
}

/// Prose paragraphs of one reST file: blank-line separated blocks without directives, comments,
/// heading underlines or indented (code) blocks, at least `min_chars` long, cut at `max_chars`.
pub fn paragraphs(text: &str, min_chars: usize, max_chars: usize) -> Vec<String> {
    let is_rule = |l: &str| {
        let t = l.trim();
        t.len() >= 3 && t.chars().all(|c| "=-~^*#+`'\".:_".contains(c))
    };
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        let Some(first) = lines.first() else { continue };
        if first.starts_with(char::is_whitespace) || first.trim_start().starts_with("..") {
            continue;
        }
        let kept: Vec<&str> = lines.iter().copied().filter(|l| !is_rule(l)).collect();
        let para = kept.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        if para.len() >= min_chars && para.contains(' ') {
            let mut end = para.len().min(max_chars);
            while !para.is_char_boundary(end) {
                end -= 1;
            }
            out.push(para[..end].to_string());
        }
    }
    out
}

/// Loads the paragraphs under `root`; files whose path hash falls in the lowest
/// `heldout_percent` go to the held-out part.
pub fn load(
    root: &Path,
    heldout_percent: u64,
    min_chars: usize,
    max_chars: usize,
) -> Result<GeneralText> {
    if !root.is_dir() {
        return Err(Error::msg(format!(
            "general text: {} is missing; install the Debian package `python3.11-doc` \
             (apt-get install python3.11-doc, or `scripts/setup.sh data`) or set `general.root`",
            root.display()
        )));
    }
    let mut files = Vec::new();
    rst_files(root, &mut files)?;
    split_files(root, files, heldout_percent, "general text", |f| {
        vpt_sdk::checks::regular_file(f)?;
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        Ok(paragraphs(&text, min_chars, max_chars))
    })
}

/// The pieces `cut` makes of each of `files` (under `root`), split into train and held-out by
/// a hash of each file's path relative to `root`: a file whose hash falls in the lowest
/// `heldout_percent` goes wholly to the held-out part. `what` names the source in the error
/// when either part is empty.
pub fn split_files(
    root: &Path,
    mut files: Vec<PathBuf>,
    heldout_percent: u64,
    what: &str,
    cut: impl Fn(&Path) -> Result<Vec<String>>,
) -> Result<GeneralText> {
    files.sort();
    let mut g = GeneralText::default();
    for f in &files {
        let rel = f
            .strip_prefix(root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        let side = if fnv1a(rel.as_bytes()) % 100 < heldout_percent {
            &mut g.heldout
        } else {
            &mut g.train
        };
        side.extend(cut(f)?);
    }
    if g.train.is_empty() || g.heldout.is_empty() {
        return Err(Error::msg(format!(
            "{what}: {} gave {} train and {} held-out pieces; both must be non-empty",
            root.display(),
            g.train.len(),
            g.heldout.len()
        )));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_skip_markup_and_code() {
        let text = "Title\n=====\n\n.. note:: skip me\n\nThis is a real paragraph of prose\nover two lines.\n\n    code = 1\n\nshort\n";
        let p = paragraphs(text, 10, 1000);
        assert_eq!(
            p,
            vec!["This is a real paragraph of prose over two lines.".to_string()]
        );
        assert_eq!(paragraphs(text, 10, 9)[0], "This is a");
    }

    #[test]
    fn missing_root_names_the_package() {
        let err = load(Path::new("/nonexistent/_sources"), 10, 50, 500)
            .unwrap_err()
            .to_string();
        assert!(err.contains("python3.11-doc"), "{err}");
    }

    #[test]
    fn python_docs_split_by_file() {
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
        let train: std::collections::HashSet<_> = g.train.iter().collect();
        let shared = g.heldout.iter().filter(|p| train.contains(p)).count();
        assert!(
            shared * 100 < g.heldout.len(),
            "{shared} held-out paragraphs also in train"
        );
    }
}
