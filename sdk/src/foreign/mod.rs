//! Consumer side: safe wrappers that implement [`Task`](crate::Task) and
//! [`Designer`](crate::Designer) by calling through a plugin's FFI vtable.

mod designer;
mod task;

pub use designer::ForeignDesigner;
pub use task::ForeignTask;
