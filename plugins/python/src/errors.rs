//! Python exceptions as one-line vpt errors: the exception's type and message and the
//! innermost traceback frames of the designer's own code, as `file:line in function`
//! (`describe` in bridge.py). Contract violations the bridge detects carry their own message.

use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

/// One line for `e`: through the bridge once it is compiled, else Python's own rendering.
pub fn describe(py: Python<'_>, e: &PyErr) -> String {
    let via_bridge = || -> PyResult<String> {
        let modules = py.import("sys")?.getattr("modules")?;
        let bridge = modules.get_item("vpt_bridge")?;
        bridge
            .call_method1("describe", (e.value(py), e.traceback(py)))?
            .extract()
    };
    via_bridge().unwrap_or_else(|_| {
        e.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// `e` as an SDK error, prefixed with what the plugin was doing.
pub fn to_error(py: Python<'_>, what: &str, e: &PyErr) -> vpt_sdk::Error {
    vpt_sdk::Error::msg(format!("{what}: {}", describe(py, e)))
}
