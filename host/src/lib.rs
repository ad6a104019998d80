//! vpt-host: the generic V-pretraining loop (DESIGN.md §1) for any task and designer a plugin
//! provides, with value estimators, optimizers, budgets, checkpoints and reports.

pub mod bench;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod config;
pub mod diagnostics;
pub mod error;
pub mod estimators;
pub mod export;
pub mod fileio;
pub mod interrupt;
pub mod intervals;
pub mod loader;
pub mod malloc;
pub mod meta;
pub mod optim;
pub mod parallel;
pub mod phases;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod records;
pub mod render;
pub mod report;
pub mod resume;
pub mod rundir;
pub mod scaffold;
pub mod summary;
pub mod tensorboard;
pub mod train;
pub mod value;

pub use error::{Error, Result};
