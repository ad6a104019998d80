//! Paths in run configs. A component marks a config field as a path by its type
//! ([`vpt_sdk::InputPath`] / [`vpt_sdk::OutputPath`], whose schema carries a `format`); before
//! the component is built the host makes every such value absolute:
//! - written in a config file (including its `[arms.*]` overrides): relative to the file's
//!   directory, so a config works from any working directory;
//! - given with `--set`, or starting with an environment variable (`${VAR}/…`): relative to the
//!   working directory, as a shell user expects;
//! - already absolute: unchanged (so resolving twice changes nothing, and a run directory's
//!   `config.json`, which holds the resolved paths, works from anywhere).
//!
//! An input path that does not exist is refused with the field and the path as resolved.

use super::RunConfig;
use crate::{loader::Plugins, Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use vpt_sdk::paths::{INPUT_PATH_FORMAT, OUTPUT_PATH_FORMAT};

/// Where the relative paths of a config are taken from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathOrigin {
    /// The directory of the config file the values were read from (absolute). `None` for a
    /// config not read from a file (a run directory's `config.json`, a test): its relative
    /// paths are taken from the working directory.
    pub config_dir: Option<PathBuf>,
    /// Dotted fields (or field prefixes) whose values came from the shell: `--set` keys and
    /// values starting with `${VAR}`. Their relative paths are taken from the working directory.
    pub shell_fields: Vec<String>,
}

impl PathOrigin {
    /// Notes that the config was read from `file`.
    pub fn note_file(&mut self, file: &Path) -> Result<()> {
        let abs = std::path::absolute(file).map_err(|e| Error::io(file, e))?;
        self.config_dir = Some(abs.parent().map(Path::to_path_buf).unwrap_or(abs));
        Ok(())
    }

    /// Notes the keys of command-line `key.path=value` overrides.
    pub fn note_overrides(&mut self, overrides: &[String]) {
        let keys = overrides.iter().filter_map(|o| o.split_once('='));
        self.shell_fields
            .extend(keys.map(|(k, _)| k.trim().to_string()));
    }

    /// True when `field`'s value came from the shell (it is, or lies under, a noted field).
    fn is_from_shell(&self, field: &str) -> bool {
        self.shell_fields.iter().any(|k| {
            field
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    /// The directory a relative value of `field` is taken from, and how to say so.
    fn base(&self, field: &str) -> Result<(PathBuf, &'static str)> {
        match &self.config_dir {
            Some(dir) if !self.is_from_shell(field) => {
                Ok((dir.clone(), "the config file's directory"))
            }
            _ => std::env::current_dir()
                .map(|d| (d, "the working directory"))
                .map_err(|e| Error::io(".", e)),
        }
    }

    /// Makes the path `value` of `field` absolute; an input path must exist.
    fn resolve(&self, field: &str, input: bool, value: &mut String) -> Result<()> {
        if value.is_empty() {
            return Ok(());
        }
        let mut how = String::new();
        if Path::new(value.as_str()).is_relative() {
            let (base, said) = self.base(field)?;
            let joined = base.join(value.as_str());
            *value = joined.to_str().map(String::from).ok_or_else(|| {
                Error::config(field, format!("{} is not valid UTF-8", joined.display()))
            })?;
            how = format!(" (relative to {said}, {})", base.display());
        }
        if input {
            if let Err(e) = std::fs::metadata(value.as_str()) {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                    _ => e.to_string(),
                };
                return Err(Error::config(field, format!("{value}: {why}{how}")));
            }
        }
        Ok(())
    }
}

/// The dotted fields of `doc` whose string values start with `${` (taken from the environment).
pub fn env_led_fields(doc: &toml::Value) -> Vec<String> {
    fn walk(v: &toml::Value, field: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) if s.starts_with("${") => out.push(field.to_string()),
            toml::Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(v, &format!("{field}[{i}]"), out)),
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| {
                let f = if field.is_empty() {
                    k.clone()
                } else {
                    format!("{field}.{k}")
                };
                walk(v, &f, out)
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

impl RunConfig {
    /// Resolves the path fields of the task's and the active designer's configs (see the
    /// module docs), loading their plugins to read the schemas. Idempotent.
    pub fn resolve_paths(&mut self, plugins: &mut Plugins) -> Result<()> {
        let origin = self.origin.clone();
        let task = plugins.get(&self.task.plugin)?;
        if let Some(m) = task.task_manifest(&self.task.name) {
            resolve_component(&mut self.task.config, &m.schema, "task.config", &origin)?;
        }
        let Some(d) = self.designer.as_mut().filter(|d| d.enabled) else {
            return Ok(());
        };
        let plugin = plugins.get(d.plugin.as_deref().unwrap_or(&self.task.plugin))?;
        if let Some(m) = plugin.designer_manifest(&d.name) {
            resolve_component(&mut d.config, &m.schema, "designer.config", &origin)?;
        }
        Ok(())
    }
}

/// Resolves, in place, every string of the component config `config` that `schema` (the
/// component's JSON Schema) marks as a path; `field` is the config's dotted path.
pub fn resolve_component(
    config: &mut Value,
    schema: &Value,
    field: &str,
    origin: &PathOrigin,
) -> Result<()> {
    walk(schema, schema, config, field, 0, &mut |f, input, s| {
        origin.resolve(f, input, s)
    })
}

/// The deepest chain of schema references followed (a guard against cyclic schemas).
const MAX_DEPTH: usize = 64;

type Visit<'a> = dyn FnMut(&str, bool, &mut String) -> Result<()> + 'a;

/// Walks `value` along `node` (a schema node of `root`), calling `visit(field, is_input, s)` on
/// each string whose node has a path format. Branches of `anyOf`/`oneOf`/`allOf` are followed
/// where the value fits them at the top level (type, `enum`/`const`, required keys).
fn walk(
    node: &Value,
    root: &Value,
    value: &mut Value,
    field: &str,
    depth: usize,
    visit: &mut Visit,
) -> Result<()> {
    let Some(node) = deref(node, root, depth) else {
        return Ok(());
    };
    if let Value::String(s) = value {
        match node.get("format").and_then(Value::as_str) {
            Some(INPUT_PATH_FORMAT) => visit(field, true, s)?,
            Some(OUTPUT_PATH_FORMAT) => visit(field, false, s)?,
            _ => {}
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for branch in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if deref(branch, root, depth).is_some_and(|b| fits(b, value)) {
                walk(branch, root, value, field, depth + 1, visit)?;
            }
        }
    }
    match value {
        Value::Object(map) => {
            let props = node.get("properties").and_then(Value::as_object);
            let extra = node.get("additionalProperties").filter(|s| s.is_object());
            for (k, v) in map.iter_mut() {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(extra) {
                    walk(sub, root, v, &format!("{field}.{k}"), depth + 1, visit)?;
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                let sub = match node.get("items") {
                    Some(Value::Array(tuple)) => tuple.get(i),
                    other => other,
                };
                if let Some(sub) = sub {
                    walk(sub, root, v, &format!("{field}[{i}]"), depth + 1, visit)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `node` with its `$ref` chain (to `#/…` inside `root`) followed; `None` past [`MAX_DEPTH`]
/// or for a reference that leads nowhere.
fn deref<'a>(mut node: &'a Value, root: &'a Value, depth: usize) -> Option<&'a Value> {
    for _ in depth..MAX_DEPTH {
        match node.get("$ref").and_then(Value::as_str) {
            None => return Some(node),
            Some(r) => node = root.pointer(r.strip_prefix('#')?)?,
        }
    }
    None
}

/// Whether `value` fits the schema node `b` at its top level: its `type`, `enum`, `const` and,
/// for an object, `required` keys.
fn fits(b: &Value, value: &Value) -> bool {
    let type_ok = match b.get("type") {
        None => true,
        Some(Value::String(t)) => has_type(t, value),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .any(|t| has_type(t, value)),
        Some(_) => true,
    };
    let enum_ok = b
        .get("enum")
        .and_then(Value::as_array)
        .is_none_or(|e| e.contains(value));
    let const_ok = b.get("const").is_none_or(|c| c == value);
    let required_ok = match (b.get("required").and_then(Value::as_array), value) {
        (Some(req), Value::Object(map)) => req
            .iter()
            .filter_map(Value::as_str)
            .all(|k| map.contains_key(k)),
        _ => true,
    };
    type_ok && enum_ok && const_ok && required_ok
}

fn has_type(t: &str, v: &Value) -> bool {
    match (t, v) {
        ("string", Value::String(_))
        | ("object", Value::Object(_))
        | ("array", Value::Array(_))
        | ("boolean", Value::Bool(_))
        | ("null", Value::Null)
        | ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use vpt_sdk::{InputPath, OutputPath};

    /// Config types shaped like the plugins' (options, lists, untagged and tagged enums).
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct Cfg {
        data: Option<InputPath>,
        cache: Option<OutputPath>,
        name: Option<String>,
        model: Option<Model>,
        sets: Option<Vec<Source>>,
    }
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Model {
        Gguf(InputPath),
        TinyRandom,
    }
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Source {
        Path(InputPath),
        Labeled { path: InputPath, kind: String },
    }

    fn schema() -> Value {
        serde_json::to_value(schemars::schema_for!(Cfg)).unwrap()
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vpt-paths-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        for f in ["a.jsonl", "b.gguf", "sub/c.jsonl"] {
            std::fs::write(d.join(f), "").unwrap();
        }
        d
    }

    #[test]
    fn every_marked_string_is_resolved_against_the_config_dir_and_nothing_else() {
        let dir = scratch("walk");
        let origin = PathOrigin {
            config_dir: Some(dir.clone()),
            shell_fields: vec![],
        };
        let mut cfg = json!({
            "data": "a.jsonl", "cache": "cache/x", "name": "a.jsonl",
            "model": {"gguf": "b.gguf"},
            "sets": ["sub/c.jsonl", {"path": "a.jsonl", "kind": "k"}, "/abs/elsewhere"]
        });
        // An absolute path is kept as it is (and, as an input, must exist).
        let e = resolve_component(&mut cfg.clone(), &schema(), "task.config", &origin)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`task.config.sets[2]`") && e.contains("/abs/elsewhere: no such file"),
            "{e}"
        );
        cfg["sets"].as_array_mut().unwrap().pop();
        resolve_component(&mut cfg, &schema(), "task.config", &origin).unwrap();
        let at = |p: &str| dir.join(p).to_str().unwrap().to_string();
        assert_eq!(cfg["data"], at("a.jsonl"));
        assert_eq!(cfg["cache"], at("cache/x"), "output paths need not exist");
        assert_eq!(cfg["name"], "a.jsonl", "a plain string is not a path");
        assert_eq!(cfg["model"]["gguf"], at("b.gguf"));
        assert_eq!(cfg["sets"][0], at("sub/c.jsonl"));
        assert_eq!(cfg["sets"][1]["path"], at("a.jsonl"));
        assert_eq!(cfg["sets"][1]["kind"], "k");
        // Idempotent: a second pass (e.g. a resumed run's config.json) changes nothing.
        let once = cfg.clone();
        resolve_component(&mut cfg, &schema(), "task.config", &PathOrigin::default()).unwrap();
        assert_eq!(cfg, once);
        // A unit variant is not a path.
        let mut tiny = json!({"model": "tiny_random"});
        resolve_component(&mut tiny, &schema(), "task.config", &origin).unwrap();
        assert_eq!(tiny["model"], "tiny_random");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_input_names_the_field_and_the_resolved_path() {
        let dir = scratch("missing");
        let origin = PathOrigin {
            config_dir: Some(dir.clone()),
            shell_fields: vec![],
        };
        let mut cfg = json!({"sets": [{"path": "nope.jsonl", "kind": "k"}]});
        let e = resolve_component(&mut cfg, &schema(), "task.config", &origin)
            .unwrap_err()
            .to_string();
        let want = dir.join("nope.jsonl");
        assert!(
            e.contains("`task.config.sets[0].path`")
                && e.contains(&format!("{}: no such file or directory", want.display()))
                && e.contains("the config file's directory"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shell_values_are_taken_from_the_working_directory() {
        let cwd = std::env::current_dir().unwrap();
        let mut origin = PathOrigin {
            config_dir: Some("/somewhere/configs".into()),
            shell_fields: vec![],
        };
        origin.note_overrides(&["task.config.sets=[\"x\"]".into(), "run.steps=3".into()]);
        origin.shell_fields.push("task.config.cache".into());
        assert!(origin.is_from_shell("task.config.sets[0]"));
        assert!(origin.is_from_shell("task.config.sets"));
        assert!(!origin.is_from_shell("task.config.setsx"));
        let mut cfg = json!({"cache": "c", "sets": ["x"], "data": null});
        resolve_component(&mut cfg, &schema(), "task.config", &origin).unwrap_err();
        cfg["sets"] = json!([]);
        resolve_component(&mut cfg, &schema(), "task.config", &origin).unwrap();
        assert_eq!(cfg["cache"], cwd.join("c").to_str().unwrap());
    }

    #[test]
    fn a_config_file_notes_its_directory_and_the_command_line_keys() {
        let dir = scratch("load");
        let file = dir.join("sub/run.toml");
        std::fs::write(
            &file,
            "[run]\nsteps = 1\n[task]\nplugin = \"t\"\nname = \"t\"\n\
             [task.config]\nm = \"${HOME}/x\"\nq = \"y\"\n",
        )
        .unwrap();
        let cfg = RunConfig::load(&file, &["task.config.p=a".into()]).unwrap();
        assert_eq!(
            cfg.origin.config_dir.as_deref(),
            Some(dir.join("sub").as_path())
        );
        assert_eq!(cfg.origin.shell_fields, ["task.config.m", "task.config.p"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fields_led_by_an_environment_variable_are_found() {
        let doc: toml::Value =
            toml::from_str("a = \"${X}/y\"\nb = \"z/${X}\"\n[t]\nl = [\"${Y}\", 1]\n").unwrap();
        assert_eq!(env_led_fields(&doc), vec!["a".to_string(), "t.l[0]".into()]);
    }
}
