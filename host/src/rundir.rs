//! A run directory (`config.json`, `metrics.jsonl`, `checkpoints/`, `summary.json`), held
//! under an exclusive lock for as long as a run writes it, and never silently reused: a new
//! run refuses a directory that holds a run unless told to `--overwrite` it (or `--resume`).
//!
//! A run directory is data (docs/trust.md): vpt never follows a symbolic link planted in it.
//! Its files are checked with no-follow metadata when the directory is opened, and opened
//! with `O_NOFOLLOW` when written, so a link is refused by name instead of redirecting a write.

use crate::{
    config::{json_to_toml, RunConfig},
    fileio::{atomic_write, open_nofollow, present, read_nofollow, refuse_symlink},
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

/// The files a run writes; what `--overwrite` removes (with the TensorBoard event files).
const RUN_FILES: [&str; 4] = [
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

/// The name prefix of TensorBoard event files (tensorboard.rs).
const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// The run files present in `path`: [`RUN_FILES`] and the event files.
fn run_files(path: &Path) -> Vec<String> {
    let mut found: Vec<String> = RUN_FILES
        .iter()
        .filter(|f| present(&path.join(f)))
        .map(|f| f.to_string())
        .collect();
    if let Ok(rd) = std::fs::read_dir(path) {
        let mut events: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(EVENTS_PREFIX))
            .collect();
        events.sort();
        found.extend(events);
    }
    found
}

/// Refuses a run directory in which one of vpt's own files (or `checkpoints/`, or an entry in
/// it) is a symbolic link, naming the link.
fn refuse_planted_links(path: &Path) -> Result<()> {
    for f in run_files(path) {
        refuse_symlink(&path.join(f))?;
    }
    if let Ok(rd) = std::fs::read_dir(path.join("checkpoints")) {
        for e in rd.flatten() {
            refuse_symlink(&e.path())?;
        }
    }
    Ok(())
}

impl RunDir {
    /// Creates (or, with [`Existing::Overwrite`], empties) `path`, locks it and writes the
    /// resolved config into it (rank 0 only under data parallelism: `RANK` > 0 never writes).
    pub fn create(path: &Path, cfg: &RunConfig, existing: Existing) -> Result<RunDir> {
        if !writes() {
            return Ok(RunDir::unlocked(path));
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        let dir = RunDir::lock(path)?;
        refuse_planted_links(path)?;
        let found = run_files(path);
        if let Some(first) = found.first() {
            match existing {
                Existing::Refuse => {
                    return Err(Error::Msg(format!(
                        "{} already holds a run (it has {first}); continue it with \
                         `vpt run --resume {}`, or replace it with `--overwrite`",
                        path.display(),
                        path.display()
                    )))
                }
                Existing::Overwrite => {
                    for f in &found {
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
        dir.save_config(cfg)?;
        Ok(dir)
    }

    /// Opens an existing run directory to continue it, taking its lock.
    pub fn resume(path: &Path) -> Result<RunDir> {
        if !writes() {
            return Ok(RunDir::unlocked(path));
        }
        let dir = RunDir::lock(path)?;
        refuse_planted_links(path)?;
        Ok(dir)
    }

    /// (Re)writes `config.json`, the resolved config a resume starts from (on resume when
    /// budget or cadence were overridden, so the next resume keeps them).
    pub fn save_config(&self, cfg: &RunConfig) -> Result<()> {
        if !self.writes() {
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(cfg).map_err(|e| Error::Msg(e.to_string()))?;
        atomic_write(self.path.join("config.json"), &json)
    }

    fn unlocked(path: &Path) -> RunDir {
        RunDir {
            path: path.to_path_buf(),
            _lock: None,
        }
    }

    /// Takes the exclusive lock of `path` without waiting; refuses when another process holds
    /// it, and refuses a lock file that is a symbolic link (never creating its target).
    fn lock(path: &Path) -> Result<RunDir> {
        let p = path.join(LOCK_FILE);
        let f = open_nofollow(
            &p,
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
        )?;
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
        let mut f = open_nofollow(&p, std::fs::OpenOptions::new().create(true).append(true))?;
        let mut line = serde_json::to_string(record).map_err(|e| Error::Msg(e.to_string()))?;
        line.push('\n');
        f.write_all(line.as_bytes()).map_err(|e| Error::io(&p, e))?;
        crate::tensorboard::append(&self.path, record)
    }

    /// Drops records after learner step `step` (on resume, so the log matches an uninterrupted run).
    pub fn truncate_after(&self, step: u64) -> Result<()> {
        let p = self.path.join("metrics.jsonl");
        if !present(&p) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&read_nofollow(&p)?).into_owned();
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
        let bytes = read_nofollow(&self.path.join("summary.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        if v["steps"].as_u64() != Some(step) {
            return None;
        }
        Some(metrics_of(&v["metrics"]))
    }

    /// The metrics of an evaluation already logged at learner step `step`, if any (the final
    /// evaluation of a run stopped before it wrote `summary.json`).
    pub fn evaluated_at(&self, step: u64) -> Option<vpt_sdk::Metrics> {
        let bytes = read_nofollow(&self.path.join("metrics.jsonl")).ok()?;
        String::from_utf8_lossy(&bytes)
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["kind"] == "eval" && v["step"].as_u64() == Some(step))
            .map(|v| metrics_of(&v["metrics"]))
    }
}

/// A JSON object of metrics (`null` for NaN) as [`vpt_sdk::Metrics`].
fn metrics_of(v: &serde_json::Value) -> vpt_sdk::Metrics {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, x)| (k.clone(), x.as_f64().unwrap_or(f64::NAN)))
        .collect()
}

fn writes() -> bool {
    vpt_sdk::data_shard().rank == 0
}

/// The resolved config a run directory was started with (`RUN_DIR/config.json`), with
/// `overrides` applied. The saved values are used exactly as saved: a `${…}` in them is not
/// expanded again.
pub fn run_config(run_dir: &Path, overrides: &[String]) -> Result<RunConfig> {
    let path = run_dir.join("config.json");
    let text = read_nofollow(&path).map_err(|e| match e {
        Error::Io { source, .. } => Error::Msg(format!(
            "{}: not a run directory ({}: {source})",
            run_dir.display(),
            path.display()
        )),
        other => other,
    })?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    let doc = json_to_toml(json).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    RunConfig::from_resolved(doc, overrides)
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
