//! The language modality of vpt: a causal-LM task (SmolLM2 from GGUF, HF or a tiny random
//! model) continued-pretrained on GSM8K, generated math and Python-doc text, downstream tasks as
//! data (labeled JSONL sets with exact / numeric / multiple-choice scorers), and top-K
//! soft-target designers (`lm.soft_targets/v1`).
pub mod candidates;
pub mod code;
pub mod corrupt;
pub mod data;
pub mod designer;
pub mod eval;
pub mod export;
pub mod general;
pub mod labeled;
pub mod loss;
pub mod mathgen;
pub mod pack;
pub mod prefix_cache;
pub mod scorer;
pub mod task;

vpt_sdk::export_plugin! {
    name: "lm",
    tasks: [task::CausalLm],
    designers: [
        designer::TopKSoft,
        designer::UniformTopK,
        designer::SelfTopK,
        designer::OracleCorrupt,
    ],
}
