//! `vpt export`: a run's θ, restored from one of its checkpoints, written by its task in a
//! format other tools read (`Task::export`). Only the task is built (the designer stays off:
//! φ does not leave the run).

use crate::{checkpoint, loader::Plugins, rundir::run_config, train::Session, Error, Result};
use std::path::{Path, PathBuf};
use vpt_sdk::ExportRequest;

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
