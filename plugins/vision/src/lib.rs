//! # vpt-vision: DINO-style dense continued pretraining with learned view masks
//!
//! Task `dino_dense`: a small ViT continues DINO pretraining on 64×64 scenes composited from
//! Fashion-MNIST items; L_down is linear segmentation (11 classes) + depth on frozen patch
//! features. Designers (kind `vision.view_mask/v1`): `unet_mask` (learned φ) and `random_mask`
//! (control). See `task/mod.rs` for the data flow and `task/stage0.rs` for the cached base checkpoint.

pub mod augment;
pub mod clutter;
pub mod config;
pub mod data;
pub mod designer;
pub mod dino;
pub mod export;
pub mod probe;
pub mod scenes;
pub mod supervised;
pub mod task;
pub mod viewgrid;
pub mod vit;

vpt_sdk::export_plugin! {
    name: "vision",
    tasks: [task::DinoDense],
    designers: [designer::UnetMask, designer::RandomMask],
}
