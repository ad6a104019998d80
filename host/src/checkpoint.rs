//! Checkpoints: a pure keep-policy, and crash-safe, verifiable I/O.
//!
//! Layout: `RUN/checkpoints/step-000000123/{tensors.safetensors, state.json, manifest.json}`
//! and `RUN/checkpoints/LATEST` naming the newest one written.
//! - Tensors are safetensors and state is typed JSON: loading a checkpoint never runs code
//!   (the old TorchScript `tensors.ot` could, through `__setstate__`; it is refused, never
//!   opened).
//! - `manifest.json` records the size and SHA-256 of the other two files and is written last;
//!   every file is fsynced, then the directory, then it is renamed into place. A checkpoint
//!   that fails its manifest is refused, and loading falls back to the newest intact one,
//!   saying so.
//! - Replacing `step-N` never deletes it before the new one is in place: the old directory is
//!   renamed aside (`step-N.old`, still loadable), the new one renamed in, then the old removed.
//! - The keep policy ranks checkpoints by step number and counts only intact ones (verified
//!   against their manifest), so it never deletes the newest intact checkpoint.
//! - A loaded state's values are checked (finite, non-negative seconds; counters that fit the
//!   step), and so are the task's and designer's (by them): a crafted but re-signed
//!   checkpoint is refused naming the file and the field.
//! - Files and directories in `checkpoints/` are never followed through symbolic links.

use crate::{
    error::clip,
    fileio::{read_nofollow, refuse_symlink},
    records::Counters,
    Error, Result,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Mutex,
};
use tch::Device;
use vpt_sdk::{tensor_file, tensor_file::FileDigest, TensorMap};

/// The checkpoint format this host writes and reads.
pub const FORMAT: &str = "vpt-checkpoint";
/// Its version (1 was TorchScript `tensors.ot` without a manifest).
pub const VERSION: u32 = 2;
const TENSORS: &str = "tensors.safetensors";
const STATE: &str = "state.json";
const MANIFEST: &str = "manifest.json";
/// The file name of the old, code-running format.
const OLD_TENSORS: &str = "tensors.ot";

/// What a checkpoint holds: named tensors (θ, φ, optimizer moments, task/designer buffers)
/// and JSON (step, charged seconds, counters, task/designer state, the resolved config).
pub struct Checkpoint {
    /// Learner step the run resumes at.
    pub step: u64,
    /// All tensors, with prefixes such as `theta/`, `phi/`, `opt_theta/`.
    pub tensors: TensorMap,
    /// Everything else.
    pub state: State,
    /// The directory it was loaded from (empty for one built in memory), named in errors.
    pub source: PathBuf,
}

/// The version of `state.json` this host writes (`{"version", "step", "state": {…}}`); format 2
/// checkpoints (the same without `version`) still load.
pub const STATE_VERSION: u32 = 3;

/// The non-tensor state of a run at a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Charged training seconds so far.
    pub seconds: f64,
    /// The host's counters.
    pub counters: Counters,
    /// The task's JSON state (`Task::state`).
    pub task: serde_json::Value,
    /// The designer's JSON state (`Designer::state`; null without a designer).
    pub designer: serde_json::Value,
    /// The resolved run config, as written (for the record; resume reads `config.json`).
    pub config: serde_json::Value,
}

/// `manifest.json`: format, version and the digest of every other file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    version: u32,
    files: BTreeMap<String, FileDigest>,
}

/// `state.json` as written since version 3: the version, the step and the [`State`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    step: u64,
    state: State,
}

/// `state.json` of format 2 (no version): the step and the state nested.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFileV2 {
    step: u64,
    state: State,
}

/// Parses `state.json` of any version this host reads; an unknown version is refused by name.
fn parse_state(bytes: &[u8]) -> std::result::Result<(u64, State), String> {
    let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match doc.get("version").map(|v| v.as_u64()) {
        None => serde_json::from_value::<StateFileV2>(doc)
            .map(|f| (f.step, f.state))
            .map_err(|e| format!("format 2: {e}")),
        Some(Some(v)) if v == u64::from(STATE_VERSION) => serde_json::from_value::<StateFile>(doc)
            .map(|f| (f.step, f.state))
            .map_err(|e| format!("version {v}: {e}")),
        Some(v) => Err(format!(
            "unknown version {}; this vpt reads version {STATE_VERSION} and format 2 (no version)",
            v.map_or_else(|| doc["version"].to_string(), |v| v.to_string())
        )),
    }
}

/// The keep policy: given the checkpoints present (step, intact?) and the step just saved,
/// the steps to delete. Steps are ranked by number, never by name; the one just saved and the
/// newest `keep - 1` intact ones before it are kept, refused (non-intact) ones are not counted,
/// and nothing newer than the one just saved is deleted (it is left for a later resume to
/// refuse or use).
pub fn to_delete(existing: &[(u64, bool)], saved: u64, keep: usize) -> Vec<u64> {
    let mut older: Vec<(u64, bool)> = existing
        .iter()
        .copied()
        .filter(|&(s, _)| s < saved)
        .collect();
    older.sort_unstable_by_key(|o| std::cmp::Reverse(o.0));
    let mut kept = 1; // the one just saved
    let mut out = Vec::new();
    for (step, intact) in older {
        if kept >= keep.max(1) {
            out.push(step);
        } else if intact {
            kept += 1;
        }
    }
    out.sort_unstable();
    out
}

/// Checkpoint directories known to be intact in this process (written or verified by it), so
/// the keep policy hashes each older checkpoint at most once.
static INTACT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn known_intact(dir: &Path) -> bool {
    INTACT.lock().is_ok_and(|s| s.contains(dir))
}

fn mark_intact(dir: &Path) {
    if let Ok(mut s) = INTACT.lock() {
        s.insert(dir.to_path_buf());
    }
}

/// Whether `dir` is an intact checkpoint: its manifest is readable and every file it lists
/// matches its digest (the tensors are not parsed).
fn is_intact(dir: &Path) -> bool {
    if known_intact(dir) {
        return true;
    }
    let ok = (|| -> Result<()> {
        let manifest = read_manifest(dir)?;
        for (file, digest) in &manifest.files {
            let p = dir.join(file);
            refuse_symlink(&p)?;
            digest
                .read_verified(&p)
                .map_err(|e| Error::Msg(e.to_string()))?;
        }
        Ok(())
    })()
    .is_ok();
    if ok {
        mark_intact(dir);
    }
    ok
}

/// Applies the keep policy after saving step `saved` (see [`to_delete`]). Only the older
/// checkpoints that may be kept are verified.
fn prune(run_dir: &Path, saved: u64, keep: usize) {
    let all = candidates(run_dir);
    let mut existing = Vec::new();
    let mut kept = 1;
    for (step, dir) in all.iter().rev() {
        let intact = match *step {
            s if s >= saved => s == saved,
            _ if kept >= keep.max(1) => false, // beyond the window: deleted whatever it is
            _ => is_intact(dir),
        };
        if intact && *step < saved {
            kept += 1;
        }
        existing.push((*step, intact));
    }
    let doomed = to_delete(&existing, saved, keep);
    for (step, dir) in &all {
        if doomed.contains(step) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn ckpt_root(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

fn step_name(step: u64) -> String {
    format!("step-{step:09}")
}

/// Write-then-rename (with fsync) of one file; shared with the report writer.
use crate::fileio::atomic_write;

/// Saves `ckpt` under `run_dir`, then applies the keep policy. On error (e.g. a full disk)
/// the partial directory is removed and the previous checkpoints are untouched.
pub fn save(run_dir: &Path, ckpt: &Checkpoint, keep: usize) -> Result<PathBuf> {
    let root = ckpt_root(run_dir);
    refuse_symlink(&root)?;
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let name = step_name(ckpt.step);
    let tmp = root.join(format!("{name}.tmp"));
    let dst = root.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = write_dir(&tmp, ckpt) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    replace_dir(&tmp, &dst)?;
    mark_intact(&dst);
    atomic_write(root.join("LATEST"), name.as_bytes())?;
    prune(run_dir, ckpt.step, keep);
    Ok(dst)
}

/// Writes the three files of a checkpoint into the new directory `dir`, fsyncing each and
/// the directory.
fn write_dir(dir: &Path, ckpt: &Checkpoint) -> Result<()> {
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors =
        tensor_file::write(&dir.join(TENSORS), &ckpt.tensors).map_err(|e| bad(e.to_string()))?;
    let state = serde_json::to_vec(&StateFile {
        version: STATE_VERSION,
        step: ckpt.step,
        state: ckpt.state.clone(),
    })
    .map_err(|e| bad(format!("serialising the state: {e}")))?;
    let state = write_synced(&dir.join(STATE), &state)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        files: [(TENSORS.to_string(), tensors), (STATE.to_string(), state)].into(),
    };
    let manifest =
        serde_json::to_vec_pretty(&manifest).map_err(|e| bad(format!("manifest: {e}")))?;
    write_synced(&dir.join(MANIFEST), &manifest)?;
    sync_dir(dir)
}

/// Writes `bytes` to a new file at `path`, fsyncs it and returns its digest.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<FileDigest> {
    use std::io::Write;
    let mut f = crate::fileio::open_nofollow(
        path,
        std::fs::OpenOptions::new().write(true).create_new(true),
    )?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    Ok(FileDigest::of(bytes))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Moves the complete directory `new` to `dst`. An existing `dst` is renamed aside first and
/// removed only once `new` is in place, so at every instant one complete copy exists.
fn replace_dir(new: &Path, dst: &Path) -> Result<()> {
    let parent = dst.parent().expect("a checkpoint directory has a parent");
    let aside = dst.with_extension("old");
    let _ = std::fs::remove_dir_all(&aside);
    let had_old = crate::fileio::present(dst);
    if had_old {
        std::fs::rename(dst, &aside).map_err(|e| Error::io(dst, e))?;
    }
    std::fs::rename(new, dst).map_err(|e| Error::io(dst, e))?;
    sync_dir(parent)?;
    if had_old {
        let _ = std::fs::remove_dir_all(&aside);
    }
    Ok(())
}

/// Steps of the checkpoint directories in `run_dir` (complete or not; loading verifies).
pub fn list_steps(run_dir: &Path) -> Result<Vec<u64>> {
    let mut steps: Vec<u64> = candidates(run_dir).into_iter().map(|(s, _)| s).collect();
    steps.dedup();
    Ok(steps)
}

/// Checkpoint directories, oldest first: `step-N`, and `step-N.old` where a replacement was
/// interrupted before `step-N` was back in place.
fn candidates(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let root = ckpt_root(run_dir);
    let Ok(rd) = std::fs::read_dir(&root) else {
        return vec![];
    };
    let names: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let mut out: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            let rest = n.strip_prefix("step-")?;
            let step = match rest.strip_suffix(".old") {
                Some(s) if !names.contains(&format!("step-{s}")) => s.parse().ok()?,
                Some(_) => return None,
                None => rest.parse().ok()?,
            };
            Some((step, root.join(n)))
        })
        .collect();
    out.sort();
    out
}

/// Loads the newest intact checkpoint of `run_dir` onto the CPU (see [`load_latest_on`]).
pub fn load_latest(run_dir: &Path) -> Result<Checkpoint> {
    load_latest_on(run_dir, Device::Cpu)
}

/// Loads the newest intact checkpoint of `run_dir`, its tensors on `device`. A newer one that
/// fails verification is skipped with a warning naming it and why.
pub fn load_latest_on(run_dir: &Path, device: Device) -> Result<Checkpoint> {
    let all = candidates(run_dir);
    if all.is_empty() {
        return Err(Error::Checkpoint {
            path: run_dir.to_path_buf(),
            message: "no checkpoint found (checkpoints/ holds no step-N directory)".into(),
        });
    }
    let mut refused = Vec::new();
    for (_, dir) in all.iter().rev() {
        match load_dir_on(dir, device) {
            Ok(c) => {
                if !refused.is_empty() {
                    eprintln!(
                        "warning: {}; falling back to {} (step {})",
                        refused.join("; "),
                        dir.display(),
                        c.step
                    );
                }
                return Ok(c);
            }
            Err(e) => refused.push(format!("refused {e}")),
        }
    }
    Err(Error::Checkpoint {
        path: run_dir.to_path_buf(),
        message: format!("no intact checkpoint: {}", refused.join("; ")),
    })
}

/// Loads one checkpoint directory onto the CPU.
pub fn load_dir(dir: &Path) -> Result<Checkpoint> {
    load_dir_on(dir, Device::Cpu)
}

/// Loads one checkpoint directory, verifying every file against its manifest first.
pub fn load_dir_on(dir: &Path, device: Device) -> Result<Checkpoint> {
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    refuse_symlink(dir)?;
    let manifest = match read_manifest(dir) {
        Ok(m) => m,
        Err(_) if dir.join(OLD_TENSORS).exists() => {
            return Err(bad(format!(
                "is in the old TorchScript format ({OLD_TENSORS}), which vpt no longer loads \
                 because loading it can run code stored in the file; start the run again (an \
                 older vpt still reads it, if you trust where the file came from)"
            )))
        }
        Err(e) => return Err(e),
    };
    let digest = |file: &str| {
        manifest
            .files
            .get(file)
            .ok_or_else(|| bad(format!("{MANIFEST} lists no {file}")))
    };
    refuse_symlink(&dir.join(STATE))?;
    refuse_symlink(&dir.join(TENSORS))?;
    let state = digest(STATE)?
        .read_verified(&dir.join(STATE))
        .map_err(|e| bad(e.to_string()))?;
    let (step, state) = parse_state(&state).map_err(|e| bad(format!("{STATE}: {e}")))?;
    check_state(step, &state).map_err(|e| bad(format!("{STATE}: {e}")))?;
    if let Some(named) = dir_step(dir).filter(|&n| n != step) {
        return Err(bad(format!(
            "{STATE}: `step` = {step}, but the directory is {}",
            step_name(named)
        )));
    }
    let tensors = tensor_file::read(&dir.join(TENSORS), digest(TENSORS)?, device)
        .map_err(|e| bad(e.to_string()))?;
    mark_intact(dir);
    Ok(Checkpoint {
        step,
        tensors,
        state,
        source: dir.to_path_buf(),
    })
}

/// The step a checkpoint directory's name gives (`step-N` or `step-N.old`), if it has one.
fn dir_step(dir: &Path) -> Option<u64> {
    let name = dir.file_name()?.to_str()?.strip_prefix("step-")?;
    name.strip_suffix(".old").unwrap_or(name).parse().ok()
}

/// Reads and checks `dir/manifest.json` (format and version), without following a link.
fn read_manifest(dir: &Path) -> Result<Manifest> {
    let bad = |message: String| Error::Checkpoint {
        path: dir.to_path_buf(),
        message,
    };
    let bytes = match read_nofollow(&dir.join(MANIFEST)) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) => {
            return Err(bad(format!(
                "{MANIFEST}: {source} (an incomplete checkpoint?)"
            )))
        }
        Err(e) => return Err(e),
    };
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(bad(format!(
            "{MANIFEST}: format `{}` version {}, this vpt reads `{FORMAT}` version {VERSION}",
            clip(&manifest.format, 80),
            manifest.version
        )));
    }
    Ok(manifest)
}

/// The host's own checks of a loaded state's values (a re-signed checkpoint passes its
/// manifest, so its values are checked like any input): the field at fault is named.
fn check_state(step: u64, s: &State) -> std::result::Result<(), String> {
    if !s.seconds.is_finite() || s.seconds < 0.0 {
        return Err(format!(
            "`state.seconds` = {}: charged seconds must be finite and non-negative",
            s.seconds
        ));
    }
    let c = &s.counters;
    let checks = [
        (
            "meta_skipped",
            c.meta_skipped,
            "state.counters.meta_steps",
            c.meta_steps,
        ),
        ("meta_steps", c.meta_steps, "the step", step),
        ("learner_skipped", c.learner_skipped, "the step", step),
        (
            "nonfinite_in_a_row",
            c.nonfinite_in_a_row,
            "state.counters.learner_skipped",
            c.learner_skipped,
        ),
    ];
    for (field, v, bound_name, bound) in checks {
        if v > bound {
            return Err(format!(
                "`state.counters.{field}` = {v} exceeds {bound_name} ({bound})"
            ));
        }
    }
    Ok(())
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
    use tch::Tensor;

    #[test]
    fn keep_policy_keeps_the_newest_intact_by_step() {
        let ok = |v: &[u64]| v.iter().map(|&s| (s, true)).collect::<Vec<_>>();
        assert_eq!(to_delete(&ok(&[30, 10, 20]), 30, 2), vec![10]);
        assert_eq!(to_delete(&ok(&[10]), 10, 2), Vec::<u64>::new());
        assert_eq!(to_delete(&ok(&[10, 20]), 20, 0), vec![10]); // always keep at least one
                                                                // by number, not by name: step 1_000_000_000 sorts before 999_999_999 as text
        assert_eq!(
            to_delete(&ok(&[999_999_999, 1_000_000_000]), 1_000_000_000, 1),
            vec![999_999_999]
        );
        // a refused one is not counted; one newer than the saved one is left alone
        let mixed = [(20, true), (25, false), (28, true), (30, false)];
        assert_eq!(to_delete(&mixed, 28, 2), Vec::<u64>::new());
        assert_eq!(to_delete(&mixed, 28, 1), vec![20, 25]);
    }

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vpt-ckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn ckpt(step: u64, w: f64) -> Checkpoint {
        let mut t = TensorMap::new();
        t.insert("theta/w", Tensor::from_slice(&[w, 2.0]));
        Checkpoint {
            step,
            tensors: t,
            state: State {
                seconds: 1.5,
                counters: Counters {
                    meta_steps: step,
                    ..Default::default()
                },
                task: serde_json::json!({"a": 1}),
                designer: serde_json::Value::Null,
                config: serde_json::json!({}),
            },
            source: PathBuf::new(),
        }
    }

    fn w(c: &Checkpoint) -> Vec<f64> {
        Vec::<f64>::try_from(c.tensors.get("theta/w").unwrap()).unwrap()
    }

    #[test]
    fn save_load_round_trip_and_torn_write_is_ignored() {
        let dir = scratch("roundtrip");
        save(&dir, &ckpt(5, 1.0), 2).unwrap();
        // A torn later write (as after SIGKILL): a .tmp dir.
        std::fs::create_dir_all(dir.join("checkpoints/step-000000009.tmp")).unwrap();
        let c = load_latest(&dir).unwrap();
        assert_eq!(c.step, 5);
        assert_eq!(c.state, ckpt(5, 1.0).state);
        assert_eq!(w(&c), vec![1.0, 2.0]);
        assert_eq!(list_steps(&dir).unwrap(), vec![5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_checkpoint_falls_back_to_the_previous_intact_one() {
        let dir = scratch("fallback");
        save(&dir, &ckpt(5, 1.0), 3).unwrap();
        let newest = save(&dir, &ckpt(9, 3.0), 3).unwrap();
        let p = newest.join(TENSORS);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x10;
        std::fs::write(&p, bytes).unwrap();
        let c = load_latest(&dir).unwrap();
        assert_eq!((c.step, w(&c)), (5, vec![1.0, 2.0]));
        let e = load_dir(&newest).err().unwrap().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replacing_a_checkpoint_keeps_one_complete_copy() {
        let dir = scratch("replace");
        save(&dir, &ckpt(4, 1.0), 2).unwrap();
        // Interrupted replacement: the old copy renamed aside, the new one not yet in place.
        let root = ckpt_root(&dir);
        std::fs::rename(root.join(step_name(4)), root.join("step-000000004.old")).unwrap();
        let c = load_latest(&dir).unwrap();
        assert_eq!(c.step, 4);
        // A completed replacement leaves the new contents and nothing aside.
        std::fs::rename(root.join("step-000000004.old"), root.join(step_name(4))).unwrap();
        save(&dir, &ckpt(4, 7.0), 2).unwrap();
        assert_eq!(w(&load_latest(&dir).unwrap()), vec![7.0, 2.0]);
        assert!(!root.join("step-000000004.old").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_torchscript_checkpoints_are_refused_unopened() {
        let dir = scratch("old");
        let old = ckpt_root(&dir).join(step_name(3));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(OLD_TENSORS), b"not opened").unwrap();
        std::fs::write(old.join(STATE), br#"{"step":3,"state":{}}"#).unwrap();
        let e = load_latest(&dir).err().unwrap().to_string();
        assert!(e.contains("old TorchScript format"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn format_2_checkpoint_written_by_the_previous_host_loads() {
        // written by `vpt compare examples/tiny.toml` before state.json had a version
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/checkpoint-format2/checkpoints/step-000000200");
        let c = load_dir(&dir).unwrap();
        assert_eq!(c.step, 200);
        assert_eq!(c.state.counters.meta_steps, 200);
        assert_eq!(c.state.task["unlabeled_cursor"][0], 200);
        assert_eq!(c.state.config["designer"]["name"], "tiny_soft");
        assert!(c.state.seconds > 0.0);
        assert!(!with_prefix(&c.tensors, "theta").is_empty());
    }

    #[test]
    fn state_versions_round_trip_and_unknown_ones_are_refused() {
        let state = ckpt(7, 1.0).state;
        let v3 = serde_json::to_vec(&StateFile {
            version: STATE_VERSION,
            step: 7,
            state: state.clone(),
        })
        .unwrap();
        assert_eq!(parse_state(&v3).unwrap(), (7, state.clone()));
        let mut doc: serde_json::Value = serde_json::from_slice(&v3).unwrap();
        doc["version"] = 99.into();
        let e = parse_state(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert!(e.contains("unknown version 99"), "{e}");
        doc.as_object_mut().unwrap().remove("version");
        assert_eq!(
            parse_state(&serde_json::to_vec(&doc).unwrap()).unwrap(),
            (7, state)
        );
    }
}
