//! Stage 0: plain DINO pretraining from random init, run at build time and cached on disk by
//! config hash, so every arm (and every repeated run) of one seed starts from the same base.
//!
//! `task.config.base_checkpoint` names such a file directly (written by any earlier run: the
//! cache path is printed to stderr); otherwise `stage0_steps > 0` finds or makes it under
//! `cache_dir` (`$VPT_CACHE/vision`, else `~/.cache/vpt/vision`).

use super::DinoDenseTask;
use crate::scenes::Split;
use std::path::{Path, PathBuf};
use tch::nn::OptimizerConfig;
use tch::Kind;
use vpt_sdk::rng::fnv1a;
use vpt_sdk::{tensor_file, Error, Result, TchContext};

/// Version of the stage-0 recipe; bump when it changes so stale caches are not reused.
const RECIPE: u32 = 1;
/// Stage-0 batches are drawn from this scene index on (disjoint from the run's stream).
const STAGE0_OFFSET: u64 = 1 << 40;

/// Loads `base_checkpoint`, or the cached stage 0, or runs and caches stage 0.
pub fn prepare_base(task: &mut DinoDenseTask) -> Result<()> {
    if let Some(p) = task.cfg.base_checkpoint.clone() {
        return load(task, &p)
            .map_err(|e| Error::config("task.config.base_checkpoint", format!("{p}: {e}")));
    }
    if task.cfg.stage0_steps == 0 {
        return Ok(());
    }
    let path = cache_path(task)?;
    if path.exists() {
        match load(task, &path) {
            Ok(()) => {
                eprintln!("[vpt-vision] stage 0: reusing {}", path.display());
                return Ok(());
            }
            // A damaged cache is only a cache: say so and rebuild it.
            Err(e) => eprintln!("[vpt-vision] stage 0: cache refused ({e}); rebuilding it"),
        }
    }
    let t0 = std::time::Instant::now();
    run(task)?;
    save(task, &path)?;
    eprintln!(
        "[vpt-vision] stage 0: {} steps in {:.1}s, saved {}",
        task.cfg.stage0_steps,
        t0.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// The cache file for this task's stage-0 settings.
pub fn cache_path(task: &DinoDenseTask) -> Result<PathBuf> {
    let c = &task.cfg;
    let mut key = serde_json::json!({
        "recipe": RECIPE, "seed": task.seed, "vit": c.vit, "dino": c.dino, "crops": c.crops,
        "batch_size": c.batch_size, "steps": c.stage0_steps, "lr": c.stage0_lr, "data_dir": c.data_dir,
    });
    // other scenes, another base (the default scenes keep the keys older caches were saved under)
    if c.scenes != crate::clutter::SceneConfig::default() {
        key["scenes"] = serde_json::json!(c.scenes);
    }
    let dir = match &c.cache_dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("VPT_CACHE") {
            Some(v) => PathBuf::from(v).join("vision"),
            None => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| {
                Error::config("task.config.cache_dir", "HOME is unset; set cache_dir")
            })?)
            .join(".cache/vpt/vision"),
        },
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir.join(format!(
        "stage0-{:016x}.safetensors",
        fnv1a(key.to_string().as_bytes())
    )))
}

/// Runs stage 0: AdamW (lr warmup 10%, cosine decay, wd 0.04, clip 3) on the student, EMA
/// teacher with the momentum schedule stretched over the stage.
fn run(task: &mut DinoDenseTask) -> Result<()> {
    let steps = task.cfg.stage0_steps;
    let lr = task.cfg.stage0_lr;
    let mut opt = tch::nn::adamw(0.9, 0.999, 0.04)
        .build(&task.student.vs, lr)
        .op("stage 0 optimizer")?;
    let b = task.cfg.batch_size;
    let warm = (steps / 10).max(1);
    for s in 0..steps {
        let at = if s < warm {
            (s + 1) as f64 / warm as f64
        } else {
            let p = (s - warm) as f64 / (steps - warm).max(1) as f64;
            0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        };
        opt.set_lr(lr * at);
        let t = task.unlabeled_batch(Split::Unlabeled, STAGE0_OFFSET + s * b as u64, b)?;
        let (loss, teacher) = task.dino(&t, None)?;
        let loss = loss.f_mean(Kind::Float)?;
        if !loss.f_double_value(&[])?.is_finite() {
            return Err(Error::msg(format!(
                "stage 0 diverged at step {s} (loss not finite); lower task.config.stage0_lr"
            )));
        }
        opt.zero_grad();
        loss.f_backward().op("stage 0 backward")?;
        opt.clip_grad_norm(3.0);
        opt.step();
        task.ema_step(s, steps, &teacher)?;
    }
    opt.zero_grad();
    Ok(())
}

fn save(task: &DinoDenseTask, path: &Path) -> Result<()> {
    let mut named = vpt_sdk::TensorMap::new();
    for (prefix, model) in [("student", &task.student), ("teacher", &task.teacher)] {
        for (n, t) in model.named() {
            named.insert(format!("{prefix}.{n}"), t.detach());
        }
    }
    named.insert("center", task.center.shallow_clone());
    tensor_file::save_verified(path, &named)
}

/// Loads a stage-0 file (safetensors) into the student, the teacher and the centre (shapes
/// must match). Old TorchScript `.ot` files are refused unopened: loading one can run code.
pub fn load(task: &mut DinoDenseTask, path: &Path) -> Result<()> {
    if path.extension().is_some_and(|e| e == "ot") {
        return Err(Error::msg(
            "a TorchScript `.ot` file, which vpt no longer loads (loading one can run code \
             stored in it); point base_checkpoint at a stage-0 `.safetensors` file",
        ));
    }
    let map = tensor_file::load_verified(path, task.device)?;
    tch::no_grad(|| -> Result<()> {
        for (prefix, model) in [("student", &task.student), ("teacher", &task.teacher)] {
            for (n, t) in model.named() {
                let key = format!("{prefix}.{n}");
                let src = map.require(&key)?;
                if src.size() != t.size() {
                    return Err(Error::Tensor {
                        name: key,
                        message: format!(
                            "shape {:?} in file, {:?} in this config (architecture changed?)",
                            src.size(),
                            t.size()
                        ),
                    });
                }
                t.shallow_clone().f_copy_(src).op("load stage 0")?;
            }
        }
        Ok(())
    })?;
    task.center = map.require("center")?.copy();
    Ok(())
}
