//! The `python` designer's config (its JSON Schema is shown by `vpt schema python`).

use schemars::JsonSchema;
use serde::Deserialize;
use vpt_sdk::{Error, InputPath, Result};

/// Config of the `python` designer: which class of which file, the kind it produces, and the
/// keyword arguments of its constructor.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PythonConfig {
    /// The Python file defining the designer (a relative path written in a config file is
    /// taken from that file's directory; one given with `--set`, from the working directory).
    pub module: InputPath,
    /// The designer class in that file: a `torch.nn.Module` built as `cls(context, **args)`.
    pub class: String,
    /// The construction kind its `forward` returns, e.g. `lm.soft_targets/v1`,
    /// `vision.view_mask/v1`, `any.example_weights/v1` or a plugin's own kind.
    pub produces: String,
    /// Keyword arguments of the class's constructor (a table; any JSON values).
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl PythonConfig {
    /// Checks what the types cannot, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.class.is_empty() || !self.class.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(Error::config(
                "class",
                format!("must name a Python class, got `{}`", self.class),
            ));
        }
        if !self.module.is_file() {
            return Err(Error::config(
                "module",
                format!("no such file: {}", self.module.display()),
            ));
        }
        Ok(())
    }
}
