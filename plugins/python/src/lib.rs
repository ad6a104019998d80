//! vpt plugin `python`: designers written in Python. A `torch.nn.Module` in a `.py` file is
//! loaded at run time into an interpreter embedded in this plugin; Python's torch and the host
//! share one libtorch, so the host differentiates V through the Python forward exactly as
//! through a Rust designer. The construction kind is the config's `produces`.

pub mod config;
pub mod designer;
mod errors;
mod interp;
mod tensors;

vpt_sdk::export_plugin! {
    name: "python",
    tasks: [],
    designers: [designer::PythonFactory],
}
