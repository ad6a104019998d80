//! Tensors across the language boundary, without copies: a tch tensor and a `torch.Tensor`
//! are two handles on one `at::Tensor` (same storage, same autograd graph).
//!
//! - tch → Python: libtorch_python's `THPVariable_Wrap(const at::TensorBase&)` (found with
//!   dlsym in the already-loaded library), which returns a new reference.
//! - Python → tch: a `torch.Tensor` object (`THPVariable`) holds its `at::Tensor` right after
//!   the object header (`THPVariable_Unpack`, an inline function of torch's headers, reads the
//!   same field); `at_shallow_clone` of it gives an owned tch tensor. The layout is checked once
//!   at start-up against a probe tensor made in Python.

use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::c_void;
use std::path::Path;
use tch::Tensor;
use torch_sys::C_tensor;

/// Mangled name of `THPVariable_Wrap(at::TensorBase const&)` in libtorch_python.so.
const WRAP_SYMBOL: &std::ffi::CStr = c"_Z16THPVariable_WrapRKN2at10TensorBaseE";

type WrapFn = unsafe extern "C" fn(*const C_tensor) -> *mut pyo3::ffi::PyObject;

/// Converts tensors between tch and Python (build once, with the GIL held).
pub struct Converter {
    wrap: WrapFn,
    /// `torch.Tensor`, for instance checks before unpacking.
    tensor_type: Py<PyAny>,
}

impl Converter {
    /// Finds `THPVariable_Wrap` in the loaded libtorch_python and checks the unpacking layout
    /// on the bridge's probe tensor.
    pub fn new(
        py: Python<'_>,
        torch_dir: &Path,
        bridge: &Bound<'_, PyModule>,
    ) -> Result<Self, String> {
        let path = torch_dir.join("lib/libtorch_python.so");
        let cpath =
            std::ffi::CString::new(path.display().to_string()).map_err(|e| e.to_string())?;
        // SAFETY: RTLD_NOLOAD returns a handle to a library `import torch` already loaded.
        let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return Err(format!(
                "{} is not loaded after `import torch`",
                path.display()
            ));
        }
        // SAFETY: looking up a symbol in a valid handle.
        let sym: *mut c_void = unsafe { libc::dlsym(handle, WRAP_SYMBOL.as_ptr()) };
        if sym.is_null() {
            return Err(format!(
                "{} has no THPVariable_Wrap (another torch version than 2.11.0?)",
                path.display()
            ));
        }
        // SAFETY: the symbol is `PyObject* THPVariable_Wrap(const at::TensorBase&)`; a reference
        // is passed as a pointer, and tch's C_tensor is an `at::Tensor` (a TensorBase).
        let wrap: WrapFn = unsafe { std::mem::transmute::<*mut c_void, WrapFn>(sym) };
        let tensor_type = py
            .import("torch")
            .and_then(|t| t.getattr("Tensor"))
            .map_err(|e| e.to_string())?
            .unbind();
        let conv = Converter { wrap, tensor_type };
        conv.check_layout(py, bridge)?;
        Ok(conv)
    }

    fn check_layout(&self, py: Python<'_>, bridge: &Bound<'_, PyModule>) -> Result<(), String> {
        let probe = bridge
            .call_method0("probe")
            .map_err(|e| format!("probe tensor: {e}"))?;
        let (t, ptr, numel): (Bound<'_, PyAny>, usize, i64) =
            probe.extract().map_err(|e| format!("probe tensor: {e}"))?;
        let ours = self
            .unpack(py, &t)
            .map_err(|e| format!("probe tensor: {e}"))?;
        if ours.data_ptr() as usize != ptr || ours.numel() as i64 != numel {
            return Err(
                "the torch.Tensor object layout is not the one of torch 2.11.0: cannot hand \
                 tensors between Python and vpt"
                    .into(),
            );
        }
        // And back: the round trip is the same tensor.
        let back = self.wrap(py, &ours)?;
        let same: bool = back
            .call_method1("is_set_to", (&t,))
            .and_then(|b| b.extract())
            .map_err(|e| format!("probe tensor: {e}"))?;
        if !same {
            return Err("a tensor handed to Python is not the same tensor".into());
        }
        Ok(())
    }

    /// `t` as a Python `torch.Tensor` (the same at::Tensor).
    pub fn wrap<'py>(&self, py: Python<'py>, t: &Tensor) -> Result<Bound<'py, PyAny>, String> {
        if !t.defined() {
            return Err("an undefined tensor cannot be handed to Python".into());
        }
        // SAFETY: `t.as_ptr()` points to a live at::Tensor for the call; Wrap returns a new
        // reference (or null with a Python error set).
        let obj = unsafe { (self.wrap)(t.as_ptr()) };
        if obj.is_null() {
            return Err(PyErr::take(py)
                .map(|e| e.to_string())
                .unwrap_or_else(|| "THPVariable_Wrap failed".into()));
        }
        // SAFETY: a new, non-null reference we now own.
        Ok(unsafe { Bound::from_owned_ptr(py, obj) })
    }

    /// `obj` (a `torch.Tensor`, or an error naming what it is) as an owned tch tensor.
    pub fn unpack(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> Result<Tensor, String> {
        if !obj.is_instance(self.tensor_type.bind(py)).unwrap_or(false) {
            return Err(format!(
                "expected a torch.Tensor, got {}",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ));
        }
        let header = std::mem::size_of::<pyo3::ffi::PyObject>();
        // SAFETY: `obj` is a THPVariable (checked above) whose `at::Tensor cdata` follows the
        // object header (torch/csrc/autograd/python_variable.h; verified at start-up);
        // at_shallow_clone returns a new at::Tensor we own.
        unsafe {
            let cdata = (obj.as_ptr() as *mut u8).add(header) as *mut C_tensor;
            let owned = torch_sys::at_shallow_clone(cdata);
            if owned.is_null() {
                return Err("could not take a reference to the tensor".into());
            }
            Ok(Tensor::from_ptr(owned))
        }
    }
}
