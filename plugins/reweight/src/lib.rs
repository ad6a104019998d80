//! vpt plugin `reweight`: a learned per-example loss-reweighting designer that works with any
//! task providing `example_features` (it produces `any.example_weights/v1`, which the host applies
//! to the task's per-example pretraining losses itself).

pub mod config;
pub mod designer;

vpt_sdk::export_plugin! {
    name: "reweight",
    tasks: [],
    designers: [designer::ReweightFactory],
}
