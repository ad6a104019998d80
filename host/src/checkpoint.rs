//! Checkpoints: a pure keep-policy, and write-then-rename I/O so that a crash (even SIGKILL)
//! during a write leaves the previous checkpoint loadable.
//!
//! Layout: `RUN/checkpoints/step-000123/{tensors.ot, state.json}` and `RUN/checkpoints/LATEST`
//! naming the newest complete one. A checkpoint directory is written as `step-…​.tmp` and
//! renamed only when complete; `LATEST` is itself replaced by rename.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;
use vpt_sdk::TensorMap;

/// What a checkpoint holds: named tensors (θ, φ, optimizer moments, task/designer buffers)
/// and JSON (step, charged seconds, counters, task/designer state, the resolved config).
pub struct Checkpoint {
    /// Learner step the run resumes at.
    pub step: u64,
    /// All tensors, with prefixes such as `theta/`, `phi/`, `opt_theta/`.
    pub tensors: TensorMap,
    /// Everything else.
    pub state: serde_json::Value,
}

/// Steps whose checkpoints to delete so that only the newest `keep` remain.
pub fn to_delete(existing: &[u64], keep: usize) -> Vec<u64> {
    let mut s = existing.to_vec();
    s.sort_unstable();
    let n = s.len().saturating_sub(keep.max(1));
    s.truncate(n);
    s
}

fn ckpt_root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Write-then-rename (with fsync) of one file; shared with the report writer.
pub use crate::report::atomic_write;

/// Saves `ckpt` under `run_dir`, then applies the keep policy.
pub fn save(run_dir: &Path, ckpt: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let root = ckpt_root(run_dir);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = format!("step-{:09}", ckpt.step);
    let tmp = root.join(format!("{name}.tmp"));
    let dst = root.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let named: Vec<(&str, &Tensor)> = ckpt.tensors.iter().collect();
    Tensor::save_multi(&named, tmp.join("tensors.ot")).map_err(|e| Error::Checkpoint {
        path: tmp.clone(),
        message: format!("writing tensors: {e}"),
    })?;
    let json =
        serde_json::to_vec_pretty(&serde_json::json!({ "step": ckpt.step, "state": ckpt.state }))
            .map_err(|e| Error::Msg(e.to_string()))?;
    atomic_write(tmp.join("state.json"), &json)?;
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    atomic_write(root.join("LATEST"), name.as_bytes())?;
    for step in to_delete(&list_steps(run_dir)?, keep) {
        let _ = std::fs::remove_dir_all(root.join(format!("step-{step:09}")));
    }
    Ok(dst)
}

/// Steps of the complete checkpoints in `run_dir`.
pub fn list_steps(run_dir: &Path) -> Result<Vec<u64>> {
    let root = ckpt_root(run_dir);
    let Ok(rd) = std::fs::read_dir(&root) else {
        return Ok(vec![]);
    };
    let mut steps: Vec<u64> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    Ok(steps)
}

/// Loads the newest complete checkpoint of `run_dir` (the one `LATEST` names).
pub fn load_latest(run_dir: &Path) -> Result<Checkpoint> {
    let root = ckpt_root(run_dir);
    let latest = std::fs::read_to_string(root.join("LATEST")).map_err(|_| Error::Checkpoint {
        path: run_dir.to_path_buf(),
        message: "no checkpoint found (checkpoints/LATEST is missing)".into(),
    })?;
    load_dir(&root.join(latest.trim()))
}

/// Loads one checkpoint directory.
pub fn load_dir(dir: &Path) -> Result<Checkpoint> {
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(dir.join("state.json"))
        .map_err(|e| bad(format!("state.json: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("state.json: {e}")))?;
    let step = v["step"]
        .as_u64()
        .ok_or_else(|| bad("state.json has no step".into()))?;
    let tensors =
        Tensor::load_multi(dir.join("tensors.ot")).map_err(|e| bad(format!("tensors.ot: {e}")))?;
    Ok(Checkpoint {
        step,
        tensors: tensors.into_iter().collect(),
        state: v["state"].clone(),
    })
}

/// The entries of `map` whose names start with `prefix/`, with the prefix removed.
pub fn with_prefix(map: &TensorMap, prefix: &str) -> TensorMap {
    let p = format!("{prefix}/");
    map.iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(&p)?.to_string(), t.shallow_clone())))
        .collect()
}

/// Adds every entry of `part` to `into` under `prefix/`.
pub fn add_prefixed(into: &mut TensorMap, prefix: &str, part: &TensorMap) {
    for (n, t) in part.iter() {
        into.insert(format!("{prefix}/{n}"), t.detach().copy());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_policy_keeps_the_newest() {
        assert_eq!(to_delete(&[30, 10, 20], 2), vec![10]);
        assert_eq!(to_delete(&[10], 2), Vec::<u64>::new());
        assert_eq!(to_delete(&[10, 20], 0), vec![10]); // always keep at least one
    }

    #[test]
    fn save_load_round_trip_and_torn_write_is_ignored() {
        let dir = std::env::temp_dir().join(format!("vpt-ckpt-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut t = TensorMap::new();
        t.insert("theta/w", Tensor::from_slice(&[1.0f64, 2.0]));
        save(
            &dir,
            &Checkpoint {
                step: 5,
                tensors: t,
                state: serde_json::json!({"a": 1}),
            },
            2,
        )
        .unwrap();
        // A torn later write (as after SIGKILL): a .tmp dir without LATEST pointing to it.
        std::fs::create_dir_all(dir.join("checkpoints/step-000000009.tmp")).unwrap();
        std::fs::write(
            dir.join("checkpoints/step-000000009.tmp/tensors.ot"),
            b"garbage",
        )
        .unwrap();
        let c = load_latest(&dir).unwrap();
        assert_eq!(c.step, 5);
        assert_eq!(c.state["a"], 1);
        assert_eq!(
            Vec::<f64>::try_from(c.tensors.get("theta/w").unwrap()).unwrap(),
            vec![1.0, 2.0]
        );
        assert_eq!(list_steps(&dir).unwrap(), vec![5]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
