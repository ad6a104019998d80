//! Continuing a run from its newest checkpoint, bit-exactly: shared by `vpt run --resume` and
//! by `vpt compare` (which continues an unfinished arm).

use crate::{
    checkpoint, config::RunConfig, loader::Plugins, rundir::RunDir, train::Session, Result,
};

/// Builds a session of `cfg` at the newest checkpoint of the run directory `dir` (locked by the
/// caller), and drops the log records after that checkpoint's step, so the continued run logs
/// exactly what an uninterrupted one would.
pub fn from_checkpoint(dir: &RunDir, cfg: RunConfig, plugins: &mut Plugins) -> Result<Session> {
    let ckpt = checkpoint::load_latest_on(&dir.path, cfg.device())?;
    let mut session = Session::build(cfg, plugins)?;
    session.restore(&ckpt)?;
    dir.truncate_after(ckpt.step)?;
    eprintln!("resuming {} at step {}", dir.path.display(), ckpt.step);
    Ok(session)
}
