//! File I/O shared by every writer: [`atomic_write`], and the no-follow opens that keep a
//! run directory's (or an export target's) writes inside it when someone planted a symbolic
//! link there ([`refuse_symlink`], [`open_nofollow`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The error for a symbolic link found where vpt writes or reads its own files.
pub fn symlink_error(path: &Path) -> Error {
    Error::Msg(format!(
        "{} is a symbolic link; vpt does not follow links in run directories or export \
         targets (they could send its writes elsewhere): remove it",
        path.display()
    ))
}

/// Refuses `path` when it is a symbolic link (dangling or not); a missing path is fine.
pub fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(symlink_error(path)),
        _ => Ok(()),
    }
}

/// Whether anything (a file, a directory, a link, dangling or not) is at `path`.
pub fn present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Opens `path` with `opts` and `O_NOFOLLOW`: a symbolic link in its last component is
/// refused, naming it, instead of being followed.
pub fn open_nofollow(path: &Path, opts: &mut OpenOptions) -> Result<File> {
    opts.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => symlink_error(path),
            _ => Error::io(path, e),
        })
}

/// Reads `path` whole without following a symbolic link in its last component.
pub fn read_nofollow(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_nofollow(path, OpenOptions::new().read(true))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// Writes `bytes` to `path` atomically: a new temp file in the same directory (created
/// exclusively, never through a link), fsync, rename over `path` (which replaces a link at
/// `path` rather than writing through it), then a best-effort fsync of the directory. A reader
/// sees the old file or the new one, never a torn one. The parent directory must exist.
pub fn atomic_write(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let path = path.as_ref();
    let name = path
        .file_name()
        .ok_or_else(|| Error::Msg(format!("atomic_write: {} names no file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = fs::remove_file(&tmp);
        }
        return Err(Error::io(&tmp, e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    // Persist the rename itself; directories cannot be opened for sync on every platform.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_refused_not_followed() {
        let d = std::env::temp_dir().join(format!("vpt-fileio-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        let outside = d.join("outside");
        let link = d.join("metrics.jsonl");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(present(&link) && !link.exists());
        let e = refuse_symlink(&link).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl is a symbolic link"), "{e}");
        let e = open_nofollow(&link, OpenOptions::new().create(true).append(true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!outside.exists());
        // atomic_write replaces the link itself
        atomic_write(&link, b"x").unwrap();
        assert!(!outside.exists() && !fs::symlink_metadata(&link).unwrap().is_symlink());
        fs::remove_dir_all(&d).unwrap();
    }
}
