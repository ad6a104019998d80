//! Shared by the vision plugin's integration tests.

/// The smallest task config the tests build: a 2-block ViT on 16 feedback scenes.
pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "batch_size": 4,
        "vit": {"dim": 32, "depth": 2, "heads": 2},
        "dino": {"out_dim": 64, "hidden": 64, "bottleneck": 16},
        "crops": {"locals": 2},
        "align_blocks": 1,
        "feedback": {"batch_size": 4, "train_scenes": 16, "head_steps": 20, "warm_steps": 5},
        "eval": {"test_scenes": 8, "feedback_scenes": 8, "general_scenes": 4, "probe_train": 40, "probe_test": 20}
    })
}
