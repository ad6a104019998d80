//! A tiny modality for tests and for seeing V-pretraining work in seconds.
//!
//! The learner is a small MLP classifier over x ∈ R^D. Its self-supervised stream carries
//! *pretext labels* ỹ that agree with the true labels except in a corrupted region
//! (x₀ > `corrupt_threshold`), where ỹ = (y + 1) mod C. The feedback set holds clean labels.
//! A designer that learns to soften targets in the corrupted region — and only the feedback
//! signal tells it where that region is — helps the downstream loss; the baseline and the
//! random-feedback control cannot know.

pub mod designer;
pub mod task;

vpt_sdk::export_plugin! {
    name: "tiny",
    tasks: [task::TinyTaskFactory],
    designers: [designer::TinySoftFactory],
}
