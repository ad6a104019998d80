//! `vpt export`: a run's θ, restored from one of its checkpoints, written by its task in a
//! format other tools read (`Task::export`). Only the task is built (the designer stays off:
//! φ does not leave the run).

use crate::{
    checkpoint,
    config::{apply_overrides, json_to_toml, RunConfig},
    loader::Plugins,
    train::Session,
    Error, Result,
};
use std::path::{Path, PathBuf};
use vpt_sdk::ExportRequest;

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

/// Restores θ of `run_dir` from checkpoint `step` (default: the latest) into a freshly built
/// task and has the task write `request`. Returns the files written.
pub fn export(
    run_dir: &Path,
    step: Option<u64>,
    request: &ExportRequest,
    plugins: &mut Plugins,
) -> Result<Vec<PathBuf>> {
    let mut cfg = run_config(run_dir, &[])?;
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
    Ok(session.task_mut().export(request)?)
}
