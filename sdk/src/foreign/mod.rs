//! Consumer side: safe wrappers that implement [`Task`](crate::Task) and
//! [`Designer`](crate::Designer) by calling through a plugin's FFI vtable, and
//! [`PluginLibrary`], a plugin file opened in this process.

mod designer;
mod library;
mod task;

pub use designer::ForeignDesigner;
pub use library::{dlopen_path, plugin_files, PluginLibrary, PLUGIN_PATH_VAR};
pub use task::ForeignTask;
