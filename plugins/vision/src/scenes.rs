//! Dense scenes: 64×64 canvases composited from 2–4 Fashion-MNIST items at random positions,
//! scales and depths, with a semantic map (10 classes + background) and a depth map.
//!
//! Scene `i` of a split is a pure function of (seed, split, i): random access, no state beyond a
//! cursor. Splits draw their items from disjoint partitions of the source images. Clutter and
//! perspective (`task.config.scenes`, see [`crate::clutter`]) are off unless a config turns them
//! on; clutter draws from its own stream, so the items of a scene are the same with or without it.

use crate::clutter::{perspective_place, ClutterBank, SceneConfig};
use crate::data::{FashionMnist, CLASSES, SIDE};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use vpt_sdk::rng::SplitMix64;
use vpt_sdk::{Result, TchContext};

/// Side of a scene canvas.
pub const CANVAS: usize = 64;
/// Semantic label of the background.
pub const BACKGROUND: u8 = CLASSES as u8;
/// Number of semantic classes (10 Fashion-MNIST classes + background).
pub const SEG_CLASSES: i64 = CLASSES as i64 + 1;
/// Depth of the background (far).
pub const FAR: f32 = 1.0;
/// An item covers a pixel where its (resized) intensity exceeds this.
pub const COVER_THRESHOLD: f32 = 0.1;
/// Seed of the fixed partition of source images (the same for every run, arm and seed).
const PARTITION_SEED: u64 = 0x5eed_f00d;
/// Key of a scene's clutter stream (separate from its items' stream).
const CLUTTER_KEY: u64 = 0x9E37_79B9_7F4A_7C15;
/// Region of a pixel no item covers and no clutter fills.
pub const REGION_BACKGROUND: u8 = 0;
/// Region of a clutter pixel (clutter fills every pixel no item covers).
pub const REGION_CLUTTER: u8 = 1;
/// Region of a pixel an item covers.
pub const REGION_OBJECT: u8 = 2;

/// A named data split. Every split but `Test` draws from a disjoint part of the 60k training
/// images; `Test` draws from the 10k test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The unlabeled pretraining stream (the learner's data).
    Unlabeled,
    /// Feedback-train: refits the linear seg/depth heads.
    FeedbackTrain,
    /// Feedback-meta: the batches L_down is computed on during meta steps.
    FeedbackMeta,
    /// Held-out feedback split: `feedback_loss` in `evaluate`.
    FeedbackEval,
    /// Held-out unlabeled images: `general_loss` in `evaluate`.
    GeneralEval,
    /// Fashion-MNIST test images: mIoU / depth RMSE / probe accuracy.
    Test,
}

impl Split {
    fn id(self) -> u64 {
        self as u64 + 1
    }
}

/// Sizes of the source-image partitions carved out of the 60k training images (the rest is
/// `Unlabeled`).
#[derive(Debug, Clone, Copy)]
pub struct PartitionSizes {
    /// Images reserved for feedback-train scenes.
    pub feedback_train: usize,
    /// Images reserved for feedback-meta scenes.
    pub feedback_meta: usize,
    /// Images reserved for held-out feedback scenes.
    pub feedback_eval: usize,
    /// Images reserved for held-out unlabeled scenes.
    pub general_eval: usize,
}

impl Default for PartitionSizes {
    fn default() -> Self {
        PartitionSizes {
            feedback_train: 2000,
            feedback_meta: 2000,
            feedback_eval: 1000,
            general_eval: 1000,
        }
    }
}

/// One item placed in a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Index of the source image (in the train or test set, per split).
    pub source: usize,
    /// Its class (0..10).
    pub class: u8,
    /// Top-left corner (row, column) on the canvas.
    pub top: usize,
    /// Left column.
    pub left: usize,
    /// Side of the square it is resized to.
    pub size: usize,
    /// Depth in (0, 1): smaller is nearer.
    pub z: f32,
}

/// A composited scene.
#[derive(Debug, Clone)]
pub struct Scene {
    /// 64×64 intensities in [0,1], row-major.
    pub pixels: Vec<f32>,
    /// 64×64 semantic labels (0..10, 10 = background).
    pub labels: Vec<u8>,
    /// 64×64 depths (front-most item's z; background = [`FAR`]).
    pub depth: Vec<f32>,
    /// The items, in paint order (far to near).
    pub items: Vec<Item>,
    /// 64×64 regions: [`REGION_BACKGROUND`], [`REGION_CLUTTER`] or [`REGION_OBJECT`].
    pub region: Vec<u8>,
    /// The clutter pattern drawn for this scene (`None` without clutter).
    pub clutter: Option<u8>,
}

impl Scene {
    fn blank() -> Scene {
        Scene {
            pixels: vec![0.0; CANVAS * CANVAS],
            labels: vec![BACKGROUND; CANVAS * CANVAS],
            depth: vec![FAR; CANVAS * CANVAS],
            items: Vec::new(),
            region: vec![REGION_BACKGROUND; CANVAS * CANVAS],
            clutter: None,
        }
    }
}

/// Bilinear resize of a 28×28 u8 image to `size`×`size` intensities in [0,1].
pub fn resize_item(src: &[u8], size: usize) -> Vec<f32> {
    let s = SIDE as f32;
    let mut out = vec![0f32; size * size];
    let px = |r: isize, c: isize| -> f32 {
        let r = r.clamp(0, SIDE as isize - 1) as usize;
        let c = c.clamp(0, SIDE as isize - 1) as usize;
        src[r * SIDE + c] as f32 / 255.0
    };
    for u in 0..size {
        let y = (u as f32 + 0.5) * s / size as f32 - 0.5;
        let (y0, fy) = (y.floor(), y - y.floor());
        for v in 0..size {
            let x = (v as f32 + 0.5) * s / size as f32 - 0.5;
            let (x0, fx) = (x.floor(), x - x.floor());
            let (r, c) = (y0 as isize, x0 as isize);
            let top = px(r, c) * (1.0 - fx) + px(r, c + 1) * fx;
            let bot = px(r + 1, c) * (1.0 - fx) + px(r + 1, c + 1) * fx;
            out[u * size + v] = top * (1.0 - fy) + bot * fy;
        }
    }
    out
}

/// Scene generator over disjoint partitions of Fashion-MNIST.
#[derive(Clone)]
pub struct SceneGen {
    data: Arc<FashionMnist>,
    seed: u64,
    parts: Vec<(Split, Vec<usize>)>,
    /// Inclusive range of items per scene.
    pub items: (usize, usize),
    /// Range of item sides on the canvas (pixels).
    pub sizes: (usize, usize),
    /// Clutter and perspective settings.
    pub config: SceneConfig,
    bank: Option<Arc<ClutterBank>>,
}

impl SceneGen {
    /// A generator: `seed` picks the scenes; the partition of source images is fixed.
    pub fn new(data: Arc<FashionMnist>, seed: u64, sizes: PartitionSizes) -> Result<Self> {
        let n = data.train.len();
        let reserved =
            sizes.feedback_train + sizes.feedback_meta + sizes.feedback_eval + sizes.general_eval;
        if reserved + 1000 > n {
            return Err(vpt_sdk::Error::config(
                "task.config",
                format!("feedback/eval partitions reserve {reserved} of {n} training images; leave at least 1000 unlabeled"),
            ));
        }
        let mut perm: Vec<usize> = (0..n).collect();
        SplitMix64::new(PARTITION_SEED).shuffle(&mut perm);
        let mut parts = Vec::new();
        let mut at = 0;
        for (split, k) in [
            (Split::FeedbackTrain, sizes.feedback_train),
            (Split::FeedbackMeta, sizes.feedback_meta),
            (Split::FeedbackEval, sizes.feedback_eval),
            (Split::GeneralEval, sizes.general_eval),
        ] {
            parts.push((split, perm[at..at + k].to_vec()));
            at += k;
        }
        parts.push((Split::Unlabeled, perm[at..].to_vec()));
        parts.push((Split::Test, (0..data.test.len()).collect()));
        Ok(SceneGen {
            data,
            seed,
            parts,
            items: (2, 4),
            sizes: (20, 44),
            config: SceneConfig::default(),
            bank: None,
        })
    }

    /// This generator with clutter and perspective as `config` says (validated).
    pub fn with_scenes(mut self, config: SceneConfig) -> Result<Self> {
        config.validate()?;
        self.bank = ClutterBank::new(&self.data, &config).map(Arc::new);
        self.config = config;
        Ok(self)
    }

    /// The source-image indices of `split` (into the test set for `Test`, else the train set).
    pub fn sources(&self, split: Split) -> &[usize] {
        self.parts
            .iter()
            .find(|(s, _)| *s == split)
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    fn image(&self, split: Split, source: usize) -> (&[u8], u8) {
        let set = if split == Split::Test {
            &self.data.test
        } else {
            &self.data.train
        };
        (set.image(source), set.labels[source])
    }

    /// Scene `index` of `split`: a pure function of (seed, split, index).
    pub fn scene(&self, split: Split, index: u64) -> Scene {
        let mut rng =
            SplitMix64::stream_keyed(self.seed, split.id() << 48 ^ index, 0xD1B5_4A32_D192_ED03);
        let pool = self.sources(split);
        let n = self.items.0 + rng.below(self.items.1 - self.items.0 + 1);
        let perspective = self.config.perspective;
        let mut items: Vec<Item> = (0..n)
            .map(|_| {
                let source = pool[rng.below(pool.len())];
                let (size, top, left, z) = if perspective {
                    // depth first; size and bottom row follow it
                    let z = rng.range(0.1, 0.9) as f32;
                    let (size, bottom) = perspective_place(z, self.sizes);
                    let bottom = (bottom as i64 + rng.int_range(-2, 2))
                        .clamp(size as i64, CANVAS as i64)
                        as usize;
                    (size, bottom - size, rng.below(CANVAS - size + 1), z)
                } else {
                    let size = self.sizes.0 + rng.below(self.sizes.1 - self.sizes.0 + 1);
                    let top = rng.below(CANVAS - size + 1);
                    let left = rng.below(CANVAS - size + 1);
                    (size, top, left, rng.range(0.1, 0.9) as f32)
                };
                Item {
                    source,
                    class: self.image(split, source).1,
                    top,
                    left,
                    size,
                    z,
                }
            })
            .collect();
        // Paint far to near, so the front-most item is painted last.
        items.sort_by(|a, b| b.z.total_cmp(&a.z));
        let mut scene = Scene::blank();
        if let Some(bank) = &self.bank {
            let mut crng =
                SplitMix64::stream_keyed(self.seed, split.id() << 48 ^ index, CLUTTER_KEY);
            let c = bank.draw(&mut crng);
            scene.pixels.copy_from_slice(&c.pixels);
            scene.region.fill(REGION_CLUTTER);
            scene.clutter = Some(c.pattern);
        }
        for it in &items {
            let img = resize_item(self.image(split, it.source).0, it.size);
            paint(&mut scene, &img, it);
        }
        scene.items = items;
        scene
    }

    /// One item alone (for the classification probe): source `source` of `split`, centred at
    /// side 56. Returns (64×64 pixels, class).
    pub fn single(&self, split: Split, source: usize) -> (Vec<f32>, u8) {
        let (img, class) = self.image(split, source);
        let size = 56;
        let it = Item {
            source,
            class,
            top: (CANVAS - size) / 2,
            left: (CANVAS - size) / 2,
            size,
            z: 0.5,
        };
        let mut scene = Scene::blank();
        paint(&mut scene, &resize_item(img, size), &it);
        (scene.pixels, class)
    }
}

fn paint(scene: &mut Scene, img: &[f32], it: &Item) {
    for u in 0..it.size {
        for v in 0..it.size {
            let val = img[u * it.size + v];
            if val > COVER_THRESHOLD {
                let p = (it.top + u) * CANVAS + it.left + v;
                scene.pixels[p] = val;
                scene.labels[p] = it.class;
                scene.depth[p] = it.z;
                scene.region[p] = REGION_OBJECT;
            }
        }
    }
}

/// A batch of scenes as tensors on `device`: images (B,1,64,64) f32, labels (B,64,64) i64,
/// depth (B,1,64,64) f32.
pub fn to_tensors(scenes: &[Scene], device: Device) -> Result<(Tensor, Tensor, Tensor)> {
    let b = scenes.len() as i64;
    let c = CANVAS as i64;
    let px: Vec<f32> = scenes
        .iter()
        .flat_map(|s| s.pixels.iter().copied())
        .collect();
    let lb: Vec<i64> = scenes
        .iter()
        .flat_map(|s| s.labels.iter().map(|&l| l as i64))
        .collect();
    let dp: Vec<f32> = scenes
        .iter()
        .flat_map(|s| s.depth.iter().copied())
        .collect();
    let images = Tensor::f_from_slice(&px)
        .op("scene pixels")?
        .f_view([b, 1, c, c])?
        .f_to(device)?;
    let labels = Tensor::f_from_slice(&lb)
        .op("scene labels")?
        .f_view([b, c, c])?
        .f_to(device)?;
    let depth = Tensor::f_from_slice(&dp)
        .op("scene depth")?
        .f_view([b, 1, c, c])?
        .f_to(device)?;
    Ok((images, labels, depth))
}

/// The region indicators of a batch of scenes: (B,2,64,64) f32 on `device`, channel 0 = object,
/// channel 1 = clutter (background = neither).
pub fn regions_to_tensor(scenes: &[Scene], device: Device) -> Result<Tensor> {
    let c = CANVAS as i64;
    let flat: Vec<f32> = scenes
        .iter()
        .flat_map(|s| {
            let obj = s.region.iter().map(|&r| (r == REGION_OBJECT) as u8 as f32);
            let clu = s.region.iter().map(|&r| (r == REGION_CLUTTER) as u8 as f32);
            obj.chain(clu).collect::<Vec<_>>()
        })
        .collect();
    Tensor::f_from_slice(&flat)
        .op("scene regions")?
        .f_view([scenes.len() as i64, 2, c, c])?
        .f_to(device)
        .op("regions to device")
}

/// Stacks 64×64 pixel buffers into (B,1,64,64) f32 on `device`.
pub fn pixels_to_tensor(pixels: &[Vec<f32>], device: Device) -> Result<Tensor> {
    let flat: Vec<f32> = pixels.iter().flat_map(|p| p.iter().copied()).collect();
    let c = CANVAS as i64;
    Tensor::f_from_slice(&flat)
        .op("pixels")?
        .f_view([pixels.len() as i64, 1, c, c])?
        .f_to_kind(Kind::Float)?
        .f_to(device)
        .op("pixels to device")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn gen(seed: u64) -> SceneGen {
        let d = crate::data::load(std::path::Path::new(crate::data::DEFAULT_DIR)).unwrap();
        SceneGen::new(d, seed, PartitionSizes::default()).unwrap()
    }

    fn gen_with(seed: u64, json: &str) -> SceneGen {
        gen(seed)
            .with_scenes(serde_json::from_str(json).unwrap())
            .unwrap()
    }

    /// The front-most item covering (r, c), recomputed from the items alone.
    fn front_item<'a>(
        g: &SceneGen,
        split: Split,
        s: &'a Scene,
        r: usize,
        c: usize,
    ) -> Option<(&'a Item, f32)> {
        s.items
            .iter()
            .filter_map(|it| {
                if r < it.top || r >= it.top + it.size || c < it.left || c >= it.left + it.size {
                    return None;
                }
                let img = resize_item(g.image(split, it.source).0, it.size);
                let v = img[(r - it.top) * it.size + c - it.left];
                (v > COVER_THRESHOLD).then_some((it, v))
            })
            .min_by(|a, b| a.0.z.total_cmp(&b.0.z))
    }

    /// Clutter fills every pixel no item covers (within [0, level], varied), items paint over
    /// it, the region map says which is which, and the items are those of the clean scene.
    #[test]
    fn clutter_fills_the_background_and_keeps_the_items() {
        let (clean, cl) = (gen(4), gen_with(4, r#"{"clutter": 0.5}"#));
        let mut patterns = HashSet::new();
        for i in 0..8 {
            let (a, s) = (
                clean.scene(Split::Unlabeled, i),
                cl.scene(Split::Unlabeled, i),
            );
            assert_eq!(a.items, s.items, "clutter must not move the items");
            assert_eq!(a.labels, s.labels);
            assert_eq!(a.depth, s.depth);
            assert!(a.clutter.is_none() && a.region.iter().all(|&r| r != REGION_CLUTTER));
            patterns.insert(s.clutter.unwrap());
            let mut bg = Vec::new();
            for p in 0..CANVAS * CANVAS {
                if s.labels[p] == BACKGROUND {
                    assert_eq!(s.region[p], REGION_CLUTTER);
                    assert!((0.0..=0.5).contains(&s.pixels[p]));
                    bg.push(s.pixels[p]);
                } else {
                    assert_eq!(s.region[p], REGION_OBJECT);
                    assert_eq!(s.pixels[p], a.pixels[p], "items paint over the clutter");
                }
            }
            let mean = bg.iter().sum::<f32>() / bg.len() as f32;
            let var = bg.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / bg.len() as f32;
            assert!(
                mean > 0.05 && var.sqrt() > 0.03,
                "clutter mean {mean} std {}",
                var.sqrt()
            );
        }
        assert!(patterns.len() > 1, "scenes draw different patterns");
        let again = gen_with(4, r#"{"clutter": 0.5}"#).scene(Split::Unlabeled, 3);
        assert_eq!(again.pixels, cl.scene(Split::Unlabeled, 3).pixels);
        let reg = regions_to_tensor(std::slice::from_ref(&again), Device::Cpu).unwrap();
        assert_eq!(reg.size(), [1, 2, 64, 64]);
        let obj = again.region.iter().filter(|&&r| r == REGION_OBJECT).count() as f64;
        assert_eq!(
            reg.get(0).get(0).sum(tch::Kind::Double).double_value(&[]),
            obj
        );
        assert_eq!(
            reg.get(0).get(1).sum(tch::Kind::Double).double_value(&[]),
            4096.0 - obj
        );
    }

    /// Under perspective a nearer item is at least as large and its bottom edge at least as low
    /// (up to the ±2-row jitter), and the front-most item wins every pixel.
    #[test]
    fn perspective_makes_nearer_items_larger_and_lower_and_occlusion_follow_depth() {
        let g = gen_with(5, r#"{"perspective": true}"#);
        let mut pairs = 0;
        for i in 0..30 {
            let s = g.scene(Split::FeedbackTrain, i);
            for a in &s.items {
                for b in &s.items {
                    if a.z < b.z {
                        pairs += 1;
                        assert!(a.size >= b.size, "{a:?} nearer than {b:?} but smaller");
                        assert!(
                            a.top + a.size + 4 >= b.top + b.size,
                            "{a:?} higher than {b:?}"
                        );
                    }
                }
            }
            for r in (0..CANVAS).step_by(3) {
                for c in (0..CANVAS).step_by(3) {
                    let p = r * CANVAS + c;
                    match front_item(&g, Split::FeedbackTrain, &s, r, c) {
                        None => assert_eq!(s.labels[p], BACKGROUND),
                        Some((it, v)) => {
                            assert_eq!((s.labels[p], s.depth[p], s.pixels[p]), (it.class, it.z, v))
                        }
                    }
                }
            }
        }
        assert!(pairs > 30);
        // Without perspective, size does not follow depth.
        let flat = gen(5);
        let inverted = (0..30)
            .flat_map(|i| {
                let s = flat.scene(Split::FeedbackTrain, i);
                let its = s.items.clone();
                its.iter()
                    .flat_map(|a| its.iter().map(move |b| (a.clone(), b.clone())))
                    .collect::<Vec<_>>()
            })
            .filter(|(a, b)| a.z < b.z && a.size < b.size)
            .count();
        assert!(inverted > 5, "old scenes keep size independent of depth");
    }

    #[test]
    fn scenes_are_deterministic_by_seed() {
        let (a, b, c) = (gen(1), gen(1), gen(2));
        for i in 0..5 {
            let (x, y, z) = (
                a.scene(Split::Unlabeled, i),
                b.scene(Split::Unlabeled, i),
                c.scene(Split::Unlabeled, i),
            );
            assert_eq!(x.pixels, y.pixels);
            assert_eq!(x.labels, y.labels);
            assert_eq!(x.items, y.items);
            assert_ne!(x.items, z.items);
        }
        assert_ne!(
            a.scene(Split::Unlabeled, 0).items,
            a.scene(Split::Unlabeled, 1).items
        );
        assert_ne!(
            a.scene(Split::Unlabeled, 0).items,
            a.scene(Split::FeedbackTrain, 0).items
        );
    }

    #[test]
    fn labels_and_depth_match_the_composited_pixels() {
        let g = gen(3);
        for i in 0..20 {
            let s = g.scene(Split::FeedbackMeta, i);
            assert!((2..=4).contains(&s.items.len()));
            let rendered: Vec<Vec<f32>> = s
                .items
                .iter()
                .map(|it| resize_item(g.image(Split::FeedbackMeta, it.source).0, it.size))
                .collect();
            for r in 0..CANVAS {
                for c in 0..CANVAS {
                    let p = r * CANVAS + c;
                    // The front-most covering item (smallest z), recomputed independently.
                    let front = s
                        .items
                        .iter()
                        .zip(&rendered)
                        .filter(|(it, img)| {
                            r >= it.top
                                && r < it.top + it.size
                                && c >= it.left
                                && c < it.left + it.size
                                && img[(r - it.top) * it.size + c - it.left] > COVER_THRESHOLD
                        })
                        .min_by(|a, b| a.0.z.total_cmp(&b.0.z));
                    match front {
                        None => {
                            assert_eq!(s.labels[p], BACKGROUND);
                            assert_eq!(s.depth[p], FAR);
                            assert_eq!(s.pixels[p], 0.0);
                        }
                        Some((it, img)) => {
                            assert_eq!(s.labels[p], it.class);
                            assert_eq!(s.depth[p], it.z);
                            assert_eq!(s.pixels[p], img[(r - it.top) * it.size + c - it.left]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn splits_never_share_source_images() {
        let g = gen(0);
        let splits = [
            Split::Unlabeled,
            Split::FeedbackTrain,
            Split::FeedbackMeta,
            Split::FeedbackEval,
            Split::GeneralEval,
        ];
        let mut seen = HashSet::new();
        let mut total = 0;
        for s in splits {
            let src = g.sources(s);
            total += src.len();
            seen.extend(src.iter().copied());
            // Every item of a scene of split s comes from s's partition.
            let part: HashSet<usize> = src.iter().copied().collect();
            for i in 0..50 {
                assert!(g
                    .scene(s, i)
                    .items
                    .iter()
                    .all(|it| part.contains(&it.source)));
            }
        }
        assert_eq!(seen.len(), total, "partitions overlap");
        assert_eq!(total, 60_000);
        let (b, l, d) = to_tensors(&[g.scene(Split::Test, 0)], Device::Cpu).unwrap();
        assert_eq!(b.size(), [1, 1, 64, 64]);
        assert_eq!(l.size(), [1, 64, 64]);
        assert_eq!(d.size(), [1, 1, 64, 64]);
    }
}
