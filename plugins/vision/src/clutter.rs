//! Scene settings beyond the items: clutter (a high-frequency background textured from other
//! Fashion-MNIST items plus seeded noise, a nuisance the baseline's crops and jitter keep but the
//! mask's blur removes) and perspective (an item's size and vertical position follow its depth).
//!
//! Every switch defaults to off, so a config without `scenes` draws the scenes it always drew.

use crate::data::{FashionMnist, CLASSES};
use crate::scenes::{resize_item, CANVAS};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Error, Result};

/// Seed of the fixed bank of clutter patterns (the same for every run, arm and seed).
const BANK_SEED: u64 = 0xC1u64 << 32 | 0x7751;

/// `task.config.scenes`: what the scene generator adds to the items.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SceneConfig {
    /// Clutter level in [0, 1]: the brightest a background pixel gets (0 = clean background).
    #[serde(default)]
    pub clutter: f64,
    /// Number of clutter patterns (each scene draws one; its identity is what the clutter probe
    /// recovers).
    #[serde(default = "d_patterns")]
    pub clutter_patterns: usize,
    /// Period in pixels of a clutter tile (a Fashion-MNIST item shrunk to this side, repeated).
    #[serde(default = "d_period")]
    pub clutter_period: usize,
    /// Share of seeded per-pixel noise in the clutter (the rest is the tiled pattern).
    #[serde(default = "d_noise")]
    pub clutter_noise: f64,
    /// Perspective: a nearer item is larger and lower on the canvas (its depth is visible);
    /// off, size and position are drawn independently of depth.
    #[serde(default)]
    pub perspective: bool,
}
fn d_patterns() -> usize {
    8
}
fn d_period() -> usize {
    6
}
fn d_noise() -> f64 {
    0.3
}

impl Default for SceneConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl SceneConfig {
    /// Refuses out-of-range settings, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(format!("task.config.scenes.{f}"), m));
        if !(0.0..=1.0).contains(&self.clutter) {
            return bad("clutter", "must lie in [0, 1]");
        }
        if !(1..=256).contains(&self.clutter_patterns) {
            return bad("clutter_patterns", "must lie in 1..=256");
        }
        if !(2..=CANVAS).contains(&self.clutter_period) {
            return bad("clutter_period", "must lie in 2..=64");
        }
        if !(0.0..=1.0).contains(&self.clutter_noise) {
            return bad("clutter_noise", "must lie in [0, 1]");
        }
        Ok(())
    }
}

/// The clutter of one scene: its pattern and its 64×64 intensities.
#[derive(Debug, Clone)]
pub struct Clutter {
    /// Which pattern of the bank (0..clutter_patterns).
    pub pattern: u8,
    /// 64×64 intensities in [0, level].
    pub pixels: Vec<f32>,
}

/// A fixed bank of tiles, each a Fashion-MNIST training item shrunk to `period`×`period` and
/// stretched to [0, 1] (items of different classes, round-robin).
#[derive(Debug, Clone)]
pub struct ClutterBank {
    tiles: Vec<Vec<f32>>,
    period: usize,
    level: f32,
    noise: f32,
}

impl ClutterBank {
    /// The bank `cfg` asks for, or `None` when clutter is off.
    pub fn new(data: &FashionMnist, cfg: &SceneConfig) -> Option<ClutterBank> {
        if cfg.clutter <= 0.0 {
            return None;
        }
        let mut rng = SplitMix64::new(BANK_SEED);
        let p = cfg.clutter_period;
        let tiles = (0..cfg.clutter_patterns)
            .map(|k| {
                let class = (k % CLASSES) as u8;
                // the first item of that class after a seeded start
                let start = rng.below(data.train.len());
                let n = data.train.len();
                let src = (0..n)
                    .map(|i| (start + i) % n)
                    .find(|&i| data.train.labels[i] == class)
                    .unwrap_or(start);
                let t = resize_item(data.train.image(src), p);
                let (lo, hi) = t
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                t.iter().map(|v| (v - lo) / (hi - lo).max(1e-6)).collect()
            })
            .collect();
        Some(ClutterBank {
            tiles,
            period: p,
            level: cfg.clutter as f32,
            noise: cfg.clutter_noise as f32,
        })
    }

    /// The clutter drawn from `rng`: a pattern, a random phase, per-pixel noise.
    pub fn draw(&self, rng: &mut SplitMix64) -> Clutter {
        let pattern = rng.below(self.tiles.len());
        let p = self.period;
        let (dy, dx) = (rng.below(p), rng.below(p));
        let tile = &self.tiles[pattern];
        let pixels = (0..CANVAS * CANVAS)
            .map(|i| {
                let (r, c) = (i / CANVAS, i % CANVAS);
                let t = tile[((r + dy) % p) * p + (c + dx) % p];
                let u = rng.uniform() as f32;
                self.level * ((1.0 - self.noise) * t + self.noise * u)
            })
            .collect();
        Clutter {
            pattern: pattern as u8,
            pixels,
        }
    }
}

/// Where perspective puts an item of depth `z` in (0.1, 0.9): its side (from `sizes.1` at the
/// nearest to `sizes.0` at the farthest) and its bottom row (from the canvas's bottom edge at the
/// nearest up to `sizes.0 + 8` at the farthest), before a ±2-row jitter.
pub fn perspective_place(z: f32, sizes: (usize, usize)) -> (usize, usize) {
    let t = ((z - 0.1) / 0.8).clamp(0.0, 1.0);
    let size = (sizes.1 as f32 - t * (sizes.1 - sizes.0) as f32).round() as usize;
    let far_bottom = (sizes.0 + 8).min(CANVAS) as f32;
    let bottom = (CANVAS as f32 - t * (CANVAS as f32 - far_bottom)).round() as usize;
    (size, bottom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_off_and_bad_values_name_the_field() {
        let c = SceneConfig::default();
        assert_eq!(c.clutter, 0.0);
        assert!(!c.perspective);
        c.validate().unwrap();
        let bad: SceneConfig = serde_json::from_str(r#"{"clutter": 1.5}"#).unwrap();
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("task.config.scenes.clutter"), "{e}");
        let bad: SceneConfig = serde_json::from_str(r#"{"clutter_period": 1}"#).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clutter_period"));
    }

    #[test]
    fn perspective_places_nearer_items_larger_and_lower() {
        let (near, far) = (
            perspective_place(0.1, (20, 44)),
            perspective_place(0.9, (20, 44)),
        );
        assert_eq!(near, (44, 64));
        assert_eq!(far, (20, 28));
        let mut last = near;
        for k in 1..=16 {
            let p = perspective_place(0.1 + 0.05 * k as f32, (20, 44));
            assert!(p.0 <= last.0 && p.1 <= last.1, "{p:?} after {last:?}");
            assert!(p.1 >= p.0, "item must fit above its bottom row");
            last = p;
        }
    }
}
