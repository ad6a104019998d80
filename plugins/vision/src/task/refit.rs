//! The heads' refit before each meta step, on a feature cache refreshed a window at a time.
//!
//! A refit needs the frozen patch features of every feedback-train scene, and the backbone's
//! forward on them is most of its cost. With `feedback.refit_scenes` = n below
//! `train_scenes` = N, the task keeps the features of all N scenes and recomputes one window of
//! n of them per refit (windows in turn), so a scene's features are at most ⌈N/n⌉ − 1 refits
//! old; the heads are fit on all N, warm-started, as before. With n ≥ N (the default) every
//! refit recomputes every scene, as the task always did.

use super::DinoDenseTask;
use crate::probe::LinearHead;
use tch::Tensor;
use vpt_sdk::{Result, TchContext};

impl DinoDenseTask {
    /// The feature cache brought up to date for this refit: all of it on the first refit (or
    /// when windows are off), else the next window.
    pub(super) fn refreshed_maps(&mut self) -> Result<Tensor> {
        let n_all = self.fb_train.0.size()[0];
        let n = self.cfg.feedback.refit_scenes.map_or(n_all, |n| n as i64);
        let cache = match (&self.fb_maps, n < n_all) {
            (Some(c), true) => c.shallow_clone(),
            _ => {
                let maps = self.frozen_patch_maps(&self.fb_train.0)?;
                if n < n_all {
                    self.fb_maps = Some(maps.shallow_clone());
                    self.refits = 1;
                }
                return Ok(maps);
            }
        };
        let windows = (n_all + n - 1) / n;
        let start = (self.refits as i64 % windows) * n;
        let k = n.min(n_all - start);
        let fresh = self.frozen_patch_maps(&self.fb_train.0.f_narrow(0, start, k)?)?;
        tch::no_grad(|| {
            cache
                .f_narrow(0, start, k)?
                .f_copy_(&fresh)
                .op("feature window")
        })?;
        self.refits += 1;
        Ok(cache)
    }

    /// Refits the heads (warm from `warm` when given) on the refreshed feature cache.
    pub(super) fn refit_heads(
        &mut self,
        warm: Option<&LinearHead>,
        steps: usize,
    ) -> Result<(LinearHead, LinearHead)> {
        let maps = self.refreshed_maps()?;
        self.fit_heads_on(&maps, warm, steps)
    }
}
