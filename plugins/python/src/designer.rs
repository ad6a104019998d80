//! The `python` designer: a `torch.nn.Module` from a `.py` file behind the SDK's [`Designer`].
//!
//! Every method takes the GIL for its call into Python only, hands tensors over without copies
//! (see `tensors`), and turns a Python exception into a one-line error naming the designer and
//! the file:line it was raised at.

use crate::{config::PythonConfig, errors, interp};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use vpt_sdk::{
    BuildContext, Construction, Designer, DesignerFactory, Error, KindSpec, Metrics, Result, State,
    TensorMap,
};

/// Registers `python`.
pub struct PythonFactory;

impl DesignerFactory for PythonFactory {
    const NAME: &'static str = "python";
    const DESCRIPTION: &'static str =
        "a designer written in Python: a torch.nn.Module (config: module, class, produces, args)";
    /// Only names the config field in listings: the kind is `produces`.
    const PRODUCES: KindSpec = KindSpec::new("<designer.config.produces>", &[]);
    const KIND_FROM_CONFIG: Option<&'static str> = Some("produces");
    type Config = PythonConfig;

    fn build(
        config: PythonConfig,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Designer>> {
        Ok(Box::new(PythonDesigner::new(config, task_context, ctx)?))
    }
}

/// A designer living in the embedded interpreter.
pub struct PythonDesigner {
    hosted: Py<PyAny>,
    label: String,
    kind: String,
}

fn interpreter() -> Result<&'static interp::Interpreter> {
    interp::get().map_err(|e| Error::msg(format!("python designer: {e}")))
}

impl PythonDesigner {
    /// Imports `config.module`, builds `config.class(task_context, **config.args)` with torch
    /// seeded from `ctx.seed`, on `ctx.device`.
    pub fn new(
        config: PythonConfig,
        task_context: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Self> {
        config.validate()?;
        let interp = interpreter()?;
        let label = format!("{} ({})", config.class, config.module.display());
        let hosted = Python::attach(|py| -> PyResult<Py<PyAny>> {
            let json = py.import("json")?;
            let to_py = |v: &serde_json::Value| -> PyResult<Bound<'_, PyAny>> {
                json.call_method1("loads", (v.to_string(),))
            };
            let args = serde_json::Value::Object(config.args.clone());
            let hosted = interp.bridge.bind(py).call_method1(
                "load",
                (
                    config.module.display().to_string(),
                    config.class.as_str(),
                    to_py(task_context)?,
                    to_py(&args)?,
                    ctx.seed,
                    ctx.device.as_str(),
                    config.produces.as_str(),
                ),
            )?;
            Ok(hosted.unbind())
        })
        .map_err(|e| Python::attach(|py| errors::to_error(py, &format!("loading {label}"), &e)))?;
        Ok(PythonDesigner {
            hosted,
            label,
            kind: config.produces,
        })
    }

    /// Calls `method` of the hosted designer with the GIL held; a Python error becomes one
    /// line naming the designer and `method`.
    fn call<T>(
        &self,
        method: &str,
        f: impl for<'py> FnOnce(Python<'py>, &Bound<'py, PyAny>, &interp::Interpreter) -> PyResult<T>,
    ) -> Result<T> {
        let interp = interpreter()?;
        Python::attach(|py| {
            f(py, self.hosted.bind(py), interp)
                .map_err(|e| errors::to_error(py, &format!("{} {method}", self.label), &e))
        })
    }

    /// `(name, tensor)` pairs from Python as a tensor map; `what` names them in errors.
    fn tensor_map(
        py: Python<'_>,
        interp: &interp::Interpreter,
        items: &Bound<'_, PyAny>,
        what: &str,
    ) -> PyResult<TensorMap> {
        let mut map = TensorMap::new();
        for item in items.try_iter()? {
            let (name, value): (String, Bound<'_, PyAny>) = item?.extract()?;
            let t = interp.tensors.unpack(py, &value).map_err(|e| {
                pyo3::exceptions::PyTypeError::new_err(format!("{what} `{name}`: {e}"))
            })?;
            map.insert(name, t);
        }
        Ok(map)
    }

    /// `map` as a Python dict of tensors.
    fn py_dict<'py>(
        py: Python<'py>,
        interp: &interp::Interpreter,
        map: &TensorMap,
    ) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, t) in map.iter() {
            let obj = interp
                .tensors
                .wrap(py, t)
                .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(format!("`{name}`: {e}")))?;
            dict.set_item(name, obj)?;
        }
        Ok(dict)
    }
}

impl Designer for PythonDesigner {
    fn parameters(&self) -> Result<TensorMap> {
        self.call("parameters", |py, h, interp| {
            Self::tensor_map(py, interp, &h.call_method0("parameters")?, "parameter")
        })
    }

    fn construct(&mut self, inputs: &TensorMap) -> Result<Construction> {
        let tensors = self.call("forward", |py, h, interp| {
            let d = Self::py_dict(py, interp, inputs)?;
            let out = h.call_method1("construct", (d,))?;
            Self::tensor_map(py, interp, &out, "forward returned")
        })?;
        Ok(Construction {
            kind: self.kind.clone(),
            tensors,
        })
    }

    fn metrics(&self, c: &Construction) -> Result<Metrics> {
        let text: String = self.call("metrics", |py, h, interp| {
            h.call_method1("metrics", (Self::py_dict(py, interp, &c.tensors)?,))?
                .extract()
        })?;
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{} metrics: {e}", self.label)))
    }

    fn regularizer(&mut self, c: &Construction) -> Result<Option<tch::Tensor>> {
        self.call("regularizer", |py, h, interp| {
            let r = h.call_method1("regularizer", (Self::py_dict(py, interp, &c.tensors)?,))?;
            if r.is_none() {
                return Ok(None);
            }
            interp
                .tensors
                .unpack(py, &r)
                .map(Some)
                .map_err(pyo3::exceptions::PyTypeError::new_err)
        })
    }

    fn state(&self) -> Result<State> {
        let (text, tensors) = self.call("state", |py, h, interp| {
            let (text, items): (String, Bound<'_, PyList>) = h.call_method0("state")?.extract()?;
            Ok((text, Self::tensor_map(py, interp, items.as_any(), "state")?))
        })?;
        let json = serde_json::from_str(&text)
            .map_err(|e| Error::msg(format!("{} state: {e}", self.label)))?;
        Ok(State { json, tensors })
    }

    fn load_state(&mut self, state: State) -> Result<()> {
        let text = state.json.to_string();
        self.call("load_state", |py, h, interp| {
            let d = Self::py_dict(py, interp, &state.tensors)?;
            h.call_method1("load_state", (text.as_str(), d))?;
            Ok(())
        })
    }
}
