//! A plugin's list of tasks and designers, its manifest, and the entry points the export macro
//! wires into the root module.

use crate::{
    ffi::{self, designer::DesignerExport, task::TaskExport},
    BuildContext, DesignerFactory, Error, Result, TaskFactory,
};
use abi_stable::std_types::{RResult, RStr, RString};
use serde::{Deserialize, Serialize};

/// What `vpt plugins list` shows of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Plugin name (used in configs: `task.plugin`).
    pub plugin: String,
    /// The plugin crate's version.
    pub version: String,
    /// The SDK version it was built against.
    pub sdk: String,
    /// The libtorch tag it was built against.
    pub torch: String,
    /// Its tasks.
    pub tasks: Vec<ComponentManifest>,
    /// Its designers.
    pub designers: Vec<ComponentManifest>,
}

impl Manifest {
    /// The entry of task `name`, if the plugin has one.
    pub fn task(&self, name: &str) -> Option<&ComponentManifest> {
        self.tasks.iter().find(|t| t.name == name)
    }
    /// The entry of designer `name`, if the plugin has one.
    pub fn designer(&self, name: &str) -> Option<&ComponentManifest> {
        self.designers.iter().find(|d| d.name == name)
    }
}

/// One task or designer in a [`Manifest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentManifest {
    /// Name used in configs.
    pub name: String,
    /// One line.
    pub description: String,
    /// Names of the kinds consumed (tasks) or produced (designers, one entry).
    pub kinds: Vec<String>,
    /// The same kinds' specs: tensors, dtypes, shapes, value constraints.
    #[serde(default)]
    pub kind_specs: Vec<crate::KindSpec>,
    /// JSON Schema of its config.
    pub schema: serde_json::Value,
    /// Tasks only: its design inputs ([`TaskFactory::DESIGN_INPUTS`]).
    #[serde(default)]
    pub design_inputs: Vec<crate::TensorSpec>,
    /// Tasks only: whether it shards batches for data-parallel runs.
    #[serde(default)]
    pub data_parallel: bool,
    /// Designers only: the config field naming the kind it produces, for a designer whose
    /// config chooses it ([`DesignerFactory::KIND_FROM_CONFIG`]); `kinds` then only names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind_from_config: Option<String>,
    /// Tasks only: the export formats it writes ([`TaskFactory::EXPORTS`]); empty when not
    /// declared.
    #[serde(default)]
    pub exports: Vec<ExportSpec>,
}

impl ComponentManifest {
    /// The kind a designer with this manifest produces under `config`: its config's
    /// [`kind_from_config`](Self::kind_from_config) field when it has one, else its declared kind.
    /// The error names the config field.
    pub fn produced_kind(&self, config: &serde_json::Value) -> Result<String> {
        let Some(field) = &self.kind_from_config else {
            return Ok(self.kinds.first().cloned().unwrap_or_default());
        };
        match config.get(field) {
            Some(serde_json::Value::String(kind)) if !kind.is_empty() => Ok(kind.clone()),
            other => Err(Error::config(
                format!("designer.config.{field}"),
                format!(
                    "designer `{}` takes the construction kind it produces from this field: name one \
                     (e.g. {}, {} or {}){}",
                    self.name,
                    crate::KIND_LM_SOFT_TARGETS,
                    crate::KIND_VISION_VIEW_MASK,
                    crate::KIND_EXAMPLE_WEIGHTS,
                    match other {
                        None => String::from(", it is missing"),
                        Some(v) => format!(", got {v}"),
                    }
                ),
            )),
        }
    }
}

/// One export format a task writes, and the element types it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSpec {
    /// `--format` value.
    pub format: String,
    /// `--dtype` values it takes.
    pub dtypes: Vec<String>,
}

type TaskBuild = fn(&serde_json::Value, &BuildContext) -> Result<Box<dyn crate::Task>>;
type DesignerBuild =
    fn(&serde_json::Value, &serde_json::Value, &BuildContext) -> Result<Box<dyn crate::Designer>>;

/// A registered task type (built from a [`TaskFactory`]).
pub struct TaskEntry {
    manifest: fn() -> ComponentManifest,
    consumes: &'static [crate::KindSpec],
    build: TaskBuild,
    name: &'static str,
}

/// A registered designer type (built from a [`DesignerFactory`]).
pub struct DesignerEntry {
    manifest: fn() -> ComponentManifest,
    build: DesignerBuild,
    name: &'static str,
}

/// Parses a component config, naming the offending field on error (e.g. `k: invalid type`).
pub fn parse_config<C: serde::de::DeserializeOwned>(config: &serde_json::Value) -> Result<C> {
    serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        Error::config(
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

fn schema_of<C: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(C)).expect("schemas serialise")
}

impl TaskEntry {
    /// The entry for factory `F`.
    pub fn of<F: TaskFactory>() -> Self {
        TaskEntry {
            name: F::NAME,
            consumes: F::CONSUMES,
            manifest: || ComponentManifest {
                name: F::NAME.into(),
                description: F::DESCRIPTION.into(),
                kinds: F::CONSUMES.iter().map(|k| k.name.to_string()).collect(),
                kind_specs: F::CONSUMES.to_vec(),
                design_inputs: F::DESIGN_INPUTS.to_vec(),
                schema: schema_of::<F::Config>(),
                data_parallel: F::DATA_PARALLEL,
                exports: F::EXPORTS
                    .iter()
                    .map(|(f, d)| ExportSpec {
                        format: f.to_string(),
                        dtypes: d.iter().map(|d| d.to_string()).collect(),
                    })
                    .collect(),
                kind_from_config: None,
            },
            build: |cfg, ctx| F::build(parse_config(cfg)?, ctx),
        }
    }
    /// Its manifest entry (name, kinds, schema).
    pub fn manifest(&self) -> ComponentManifest {
        (self.manifest)()
    }
    /// The kinds it consumes.
    pub fn consumes(&self) -> &'static [crate::KindSpec] {
        self.consumes
    }
    /// Builds the task in-process (used by the export glue and by tests).
    pub fn build(
        &self,
        cfg: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn crate::Task>> {
        (self.build)(cfg, ctx)
    }
}

impl DesignerEntry {
    /// The entry for factory `F`.
    pub fn of<F: DesignerFactory>() -> Self {
        DesignerEntry {
            name: F::NAME,
            manifest: || ComponentManifest {
                name: F::NAME.into(),
                description: F::DESCRIPTION.into(),
                kinds: vec![F::PRODUCES.name.to_string()],
                kind_specs: match F::KIND_FROM_CONFIG {
                    None => vec![F::PRODUCES],
                    Some(_) => Vec::new(),
                },
                design_inputs: Vec::new(),
                schema: schema_of::<F::Config>(),
                data_parallel: false,
                exports: Vec::new(),
                kind_from_config: F::KIND_FROM_CONFIG.map(String::from),
            },
            build: |cfg, task_ctx, ctx| F::build(parse_config(cfg)?, task_ctx, ctx),
        }
    }
    /// Its manifest entry (name, kind, schema).
    pub fn manifest(&self) -> ComponentManifest {
        (self.manifest)()
    }
    /// Builds the designer in-process.
    pub fn build(
        &self,
        cfg: &serde_json::Value,
        task_ctx: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Box<dyn crate::Designer>> {
        (self.build)(cfg, task_ctx, ctx)
    }
}

/// A plugin's registry: its name, version and components.
pub struct Registry {
    /// Plugin name.
    pub plugin: &'static str,
    /// Plugin crate version.
    pub version: &'static str,
    /// Task types.
    pub tasks: Vec<TaskEntry>,
    /// Designer types.
    pub designers: Vec<DesignerEntry>,
}

impl Registry {
    /// The plugin's manifest.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            plugin: self.plugin.into(),
            version: self.version.into(),
            sdk: crate::SDK_VERSION.into(),
            torch: crate::TORCH_TAG.into(),
            tasks: self.tasks.iter().map(TaskEntry::manifest).collect(),
            designers: self.designers.iter().map(DesignerEntry::manifest).collect(),
        }
    }
    /// The task entry called `name`.
    pub fn task(&self, name: &str) -> Result<&TaskEntry> {
        self.tasks.iter().find(|t| t.name == name).ok_or_else(|| {
            let have: Vec<_> = self.tasks.iter().map(|t| t.name).collect();
            Error::config(
                "task.name",
                format!(
                    "plugin `{}` has no task `{name}` (it has: {})",
                    self.plugin,
                    have.join(", ")
                ),
            )
        })
    }
    /// The designer entry called `name`.
    pub fn designer(&self, name: &str) -> Result<&DesignerEntry> {
        self.designers
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                let have: Vec<_> = self.designers.iter().map(|d| d.name).collect();
                Error::config(
                    "designer.name",
                    format!(
                        "plugin `{}` has no designer `{name}` (it has: {})",
                        self.plugin,
                        have.join(", ")
                    ),
                )
            })
    }
}

/// Glue for [`PluginMod::manifest`](crate::ffi::module::PluginMod).
pub fn export_manifest(reg: &Registry) -> RResult<RString, crate::PluginError> {
    ffi::guard(reg.plugin, "manifest", || ffi::to_json(&reg.manifest()))
}

/// Glue for [`PluginMod::new_task`](crate::ffi::module::PluginMod).
pub fn export_new_task(
    reg: &Registry,
    name: RStr<'_>,
    config: RStr<'_>,
    ctx: RStr<'_>,
) -> RResult<ffi::task::TaskBox, crate::PluginError> {
    ffi::guard(reg.plugin, "new_task", || {
        let cfg: serde_json::Value = ffi::from_json(config.as_str(), "task config")?;
        let ctx: BuildContext = ffi::from_json(ctx.as_str(), "build context")?;
        let entry = reg.task(name.as_str())?;
        let task = entry.build(&cfg, &ctx)?;
        Ok(TaskExport::new(reg.plugin, task, entry.consumes()).into_box())
    })
}

/// Glue for [`PluginMod::new_designer`](crate::ffi::module::PluginMod).
pub fn export_new_designer(
    reg: &Registry,
    name: RStr<'_>,
    config: RStr<'_>,
    task_ctx: RStr<'_>,
    ctx: RStr<'_>,
) -> RResult<ffi::designer::DesignerBox, crate::PluginError> {
    ffi::guard(reg.plugin, "new_designer", || {
        let cfg: serde_json::Value = ffi::from_json(config.as_str(), "designer config")?;
        let task_ctx: serde_json::Value = ffi::from_json(task_ctx.as_str(), "task context")?;
        let ctx: BuildContext = ffi::from_json(ctx.as_str(), "build context")?;
        let d = reg.designer(name.as_str())?.build(&cfg, &task_ctx, &ctx)?;
        Ok(DesignerExport::new(reg.plugin, d).into_box())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn designer(kind_from_config: Option<&str>) -> ComponentManifest {
        ComponentManifest {
            name: "d".into(),
            description: String::new(),
            kinds: vec!["declared/v1".into()],
            kind_specs: Vec::new(),
            schema: serde_json::Value::Null,
            design_inputs: Vec::new(),
            data_parallel: false,
            kind_from_config: kind_from_config.map(String::from),
            exports: Vec::new(),
        }
    }

    #[test]
    fn produced_kind_comes_from_the_declaration_or_the_named_config_field() {
        let cfg = serde_json::json!({ "produces": "lm.soft_targets/v1" });
        assert_eq!(designer(None).produced_kind(&cfg).unwrap(), "declared/v1");
        let dynamic = designer(Some("produces"));
        assert_eq!(dynamic.produced_kind(&cfg).unwrap(), "lm.soft_targets/v1");
        let e = dynamic.produced_kind(&serde_json::json!({})).unwrap_err();
        assert_eq!(e.field(), Some("designer.config.produces"), "{e}");
        assert!(e.to_string().contains("it is missing"), "{e}");
        let e = dynamic
            .produced_kind(&serde_json::json!({ "produces": 3 }))
            .unwrap_err();
        assert!(e.to_string().contains("got 3"), "{e}");
        // Old manifests (no such field) still parse.
        let old: ComponentManifest = serde_json::from_value(serde_json::json!({
            "name": "d", "description": "", "kinds": ["k"], "schema": null
        }))
        .unwrap();
        assert_eq!(old.kind_from_config, None);
    }
}
