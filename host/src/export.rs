//! `vpt export`: a run's θ, restored from one of its checkpoints, written by its task in a
//! format other tools read (`Task::export`). Only the task is built (the designer stays off:
//! φ does not leave the run).
//!
//! Everything that can be refused is refused before the task is built and before anything is
//! written: an `--out` that is (inside) a run directory, a non-empty `--out` without
//! `--overwrite`, a symbolic link among `--out`'s entries, a format or element type the task's
//! manifest does not list. The task writes into a fresh staging directory inside `--out`;
//! its files are then renamed into place (a rename replaces a name, it never writes through a
//! link), so a refused or failed export leaves `--out` as it was.

use crate::{
    checkpoint,
    fileio::{present, refuse_symlink},
    loader::Plugins,
    rundir::run_config,
    train::Session,
    Error, Result,
};
use std::path::{Path, PathBuf};
use vpt_sdk::ExportRequest;

/// Restores θ of `run_dir` from checkpoint `step` (default: the latest) into a freshly built
/// task and has the task write `request`; files already in `request.out_dir` are replaced only
/// with `overwrite`. Returns the files written.
pub fn export(
    run_dir: &Path,
    step: Option<u64>,
    request: &ExportRequest,
    overwrite: bool,
    plugins: &mut Plugins,
) -> Result<Vec<PathBuf>> {
    let mut cfg = run_config(run_dir, &[])?;
    check_target(run_dir, &request.out_dir, overwrite)?;
    check_format(request, plugins, &cfg.task.plugin, &cfg.task.name)?;
    if let Some(d) = cfg.designer.as_mut() {
        d.enabled = false;
    }
    let ckpt = match step {
        None => checkpoint::load_latest(run_dir)?,
        Some(n) => {
            let steps = checkpoint::list_steps(run_dir)?;
            if !steps.contains(&n) {
                return Err(Error::Checkpoint {
                    path: run_dir.to_path_buf(),
                    message: format!("no checkpoint at step {n} (it has steps {steps:?})"),
                });
            }
            checkpoint::load_dir(&run_dir.join("checkpoints").join(format!("step-{n:09}")))?
        }
    };
    let mut session = Session::build(cfg, plugins)?;
    session.restore(&ckpt)?;
    let out = &request.out_dir;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let stage = out.join(format!(".vpt-export-{}", std::process::id()));
    if present(&stage) {
        remove(&stage)?;
    }
    std::fs::create_dir(&stage).map_err(|e| Error::io(&stage, e))?;
    let staged = ExportRequest {
        out_dir: stage.clone(),
        ..request.clone()
    };
    let written = session
        .task_mut()
        .export(&staged)
        .map_err(Error::from)
        .and_then(|files| move_into(&stage, out).map(|()| files));
    let _ = remove(&stage);
    Ok(written?
        .into_iter()
        .map(|f| match f.strip_prefix(&stage) {
            Ok(rel) => out.join(rel),
            Err(_) => f,
        })
        .collect())
}

fn remove(p: &Path) -> Result<()> {
    std::fs::remove_dir_all(p).map_err(|e| Error::io(p, e))
}

/// Refuses an `--out` that is the run directory, inside it or inside any other run directory
/// (export would replace its `config.json`), one that holds a symbolic link, and a non-empty
/// one without `overwrite` (naming what it holds).
pub fn check_target(run_dir: &Path, out: &Path, overwrite: bool) -> Result<()> {
    let run = std::fs::canonicalize(run_dir).map_err(|e| Error::io(run_dir, e))?;
    let target = resolved(out);
    if target.starts_with(&run) {
        return Err(Error::config(
            "--out",
            format!(
                "{} is inside the run directory {} (the export would replace its files); \
                 choose a directory outside it",
                out.display(),
                run_dir.display()
            ),
        ));
    }
    if let Some(other) = target.ancestors().find(|d| is_run_dir(d)) {
        return Err(Error::config(
            "--out",
            format!(
                "{} is inside the run directory {} (the export would replace its files); \
                 choose a directory outside it",
                out.display(),
                other.display()
            ),
        ));
    }
    let Ok(rd) = std::fs::read_dir(out) else {
        return Ok(()); // missing: created later; not a directory: create_dir_all says so
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with(".vpt-export-"))
        .collect();
    names.sort();
    for n in &names {
        refuse_symlink(&out.join(n))?;
    }
    if !names.is_empty() && !overwrite {
        let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
        let more = match names.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        return Err(Error::config(
            "--out",
            format!(
                "{} is not empty (it holds {}{more}); export into an empty directory, or pass \
                 --overwrite to replace the files the export writes",
                out.display(),
                shown.join(", ")
            ),
        ));
    }
    Ok(())
}

/// `p` made absolute with its existing part canonicalized (links resolved) and the rest
/// appended as given.
fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut missing = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            return missing.iter().rev().fold(c, |acc, n| acc.join(n));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// Whether `d` holds a run: its `config.json` and its `checkpoints/` or `metrics.jsonl`.
fn is_run_dir(d: &Path) -> bool {
    present(&d.join("config.json"))
        && (present(&d.join("checkpoints")) || present(&d.join("metrics.jsonl")))
}

/// Refuses a format or element type the task's manifest does not list (a task that lists
/// none checks the request itself).
fn check_format(
    req: &ExportRequest,
    plugins: &mut Plugins,
    plugin: &str,
    task: &str,
) -> Result<()> {
    let exports = plugins
        .get(plugin)?
        .task_manifest(task)
        .map(|m| m.exports.clone())
        .unwrap_or_default();
    if exports.is_empty() {
        return Ok(());
    }
    let list = || {
        exports
            .iter()
            .map(|e| format!("{} ({})", e.format, e.dtypes.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(spec) = exports.iter().find(|e| e.format == req.format) else {
        return Err(Error::config(
            "--format",
            format!(
                "task `{task}` cannot write `{}`; it writes {}",
                crate::error::clip(&req.format, 40),
                list()
            ),
        ));
    };
    if !spec.dtypes.contains(&req.dtype) {
        return Err(Error::config(
            "--dtype",
            format!(
                "format `{}` takes {}, not `{}`",
                spec.format,
                spec.dtypes.join(", "),
                crate::error::clip(&req.dtype, 40)
            ),
        ));
    }
    Ok(())
}

/// Moves every file under `stage` to the same place under `out`, creating directories (never
/// through a link) and replacing files of the same name.
fn move_into(stage: &Path, out: &Path) -> Result<()> {
    let rd = std::fs::read_dir(stage).map_err(|e| Error::io(stage, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io(stage, e))?;
        let (src, dst) = (e.path(), out.join(e.file_name()));
        refuse_symlink(&dst)?;
        let ty = e.file_type().map_err(|e| Error::io(&src, e))?;
        if ty.is_dir() {
            if !present(&dst) {
                std::fs::create_dir(&dst).map_err(|e| Error::io(&dst, e))?;
            }
            move_into(&src, &dst)?;
        } else {
            std::fs::rename(&src, &dst).map_err(|e| Error::io(&dst, e))?;
        }
    }
    Ok(())
}
