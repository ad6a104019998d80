//! A run directory (`config.json`, `metrics.jsonl`, `checkpoints/`, `summary.json`), held
//! under an exclusive lock for as long as a run writes it, and never silently reused: a new
//! run refuses a directory that holds a run unless told to `--overwrite` it (or `--resume`).

use crate::{
    config::{apply_overrides, json_to_toml, RunConfig},
    fileio::atomic_write,
    records::Record,
    Error, Result,
};
use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

/// The lock file inside a run directory.
pub const LOCK_FILE: &str = ".lock";

/// What a new run does with a directory that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse, naming `--resume` and `--overwrite`.
    Refuse,
    /// Delete the old run's files (after taking the lock) and start afresh.
    Overwrite,
}

/// A run directory: resolved config, `metrics.jsonl`, checkpoints. Holds the directory's
/// exclusive lock until dropped (rank 0 only; other ranks never write).
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
    _lock: Option<File>,
}

/// The files a run writes; what `--overwrite` removes.
const RUN_FILES: [&str; 4] = [
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

impl RunDir {
    /// Creates (or, with [`Existing::Overwrite`], empties) `path`, locks it and writes the
    /// resolved config into it (rank 0 only under data parallelism: `RANK` > 0 never writes).
    pub fn create(path: &Path, cfg: &RunConfig, existing: Existing) -> Result<RunDir> {
        if !writes() {
            return Ok(RunDir::unlocked(path));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let dir = RunDir::lock(path)?;
        if let Some(found) = RUN_FILES.iter().find(|f| path.join(f).exists()) {
            match existing {
                Existing::Refuse => {
                    return Err(Error::Msg(format!(
                        "{} already holds a run (it has {found}); continue it with \
                         `vpt run --resume {}`, or replace it with `--overwrite`",
                        path.display(),
                        path.display()
                    )))
                }
                Existing::Overwrite => {
                    for f in RUN_FILES {
                        let p = path.join(f);
                        let gone = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                        match gone {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                return Err(Error::io(&p, e))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        let json = serde_json::to_vec_pretty(cfg).map_err(|e| Error::Msg(e.to_string()))?;
        atomic_write(path.join("config.json"), &json)?;
        Ok(dir)
    }

    /// Opens an existing run directory to continue it, taking its lock.
    pub fn resume(path: &Path) -> Result<RunDir> {
        if !writes() {
            return Ok(RunDir::unlocked(path));
        }
        RunDir::lock(path)
    }

    fn unlocked(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
            _lock: None,
        }
    }

    /// Takes the exclusive lock of `path` without waiting; refuses when another process holds it.
    fn lock(path: &Path) -> Result<RunDir> {
        let p = path.join(LOCK_FILE);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Msg(format!(
                    "{} is in use by another vpt process (its lock {} is held); wait for it to \
                     finish or choose another --out",
                    path.display(),
                    p.display()
                )));
            }
            return Err(Error::io(&p, e));
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: Some(f),
        })
    }

    /// Whether this process writes the run directory (rank 0 of a data-parallel run).
    pub fn writes(&self) -> bool {
        writes()
    }

    /// Appends one record to `metrics.jsonl` (one `write` call per line, so lines never
    /// interleave).
    pub fn log(&self, record: &Record) -> Result<()> {
        use std::io::Write;
        if !self.writes() {
            return Ok(());
        }
        let p = self.path.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        let mut line = serde_json::to_string(record).map_err(|e| Error::Msg(e.to_string()))?;
        line.push('\n');
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&p, e))?;
        crate::tensorboard::append(&self.path, record)
    }

    /// Drops records after learner step `step` (on resume, so the log matches an uninterrupted run).
    pub fn truncate_after(&self, step: u64) -> Result<()> {
        let p = self.path.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&p) else {
            return Ok(());
        };
        let kept: String = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        atomic_write(&p, kept.as_bytes())
    }

    /// The final metrics in `summary.json` when the run already finished at learner step
    /// `step` (NaN metrics are `null` in the file).
    pub fn finished_at(&self, step: u64) -> Option<vpt_sdk::Metrics> {
        let bytes = std::fs::read(self.path.join("summary.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if v["steps"].as_u64() != Some(step) {
            return None;
        }
        let metrics = v["metrics"].as_object()?;
        Some(
            metrics
                .iter()
                .map(|(k, x)| (k.clone(), x.as_f64().unwrap_or(f64::NAN)))
                .collect(),
        )
    }
}

fn writes() -> bool {
    vpt_sdk::data_shard().rank == 0
}

/// The resolved config a run directory was started with (`RUN_DIR/config.json`), with
/// `overrides` applied.
pub fn run_config(run_dir: &Path, overrides: &[String]) -> Result<RunConfig> {
    let path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Msg(format!(
            "{}: not a run directory ({}: {e})",
            run_dir.display(),
            path.display()
        ))
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    let mut doc = json_to_toml(json).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    apply_overrides(&mut doc, overrides)?;
    RunConfig::from_toml(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        let doc: toml::Value =
            toml::from_str("[run]\nsteps = 1\n[task]\nplugin = \"tiny\"\nname = \"tiny\"\n")
                .unwrap();
        RunConfig::from_toml(doc).unwrap()
    }

    #[test]
    fn an_existing_run_is_refused_locked_or_overwritten() {
        let d = std::env::temp_dir().join(format!("vpt-rundir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let first = RunDir::create(&d, &cfg(), Existing::Refuse).unwrap();
        // Held by `first`: a second writer is refused (flock is per open file description).
        let e = RunDir::resume(&d).err().unwrap().to_string();
        assert!(e.contains("in use by another vpt process"), "{e}");
        drop(first);
        let e = RunDir::create(&d, &cfg(), Existing::Refuse)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("already holds a run") && e.contains("--resume"),
            "{e}"
        );
        std::fs::write(d.join("metrics.jsonl"), "{}\n").unwrap();
        let again = RunDir::create(&d, &cfg(), Existing::Overwrite).unwrap();
        assert!(!d.join("metrics.jsonl").exists() && d.join("config.json").exists());
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
