//! Bodies of `vpt plugins list`, `vpt plugins inspect` and `vpt schema`: each returns the text
//! to print, or an error whose message is short enough to print as is.

use super::{load, LoadedPlugin, Plugins, SearchPath};
use crate::{Error, Result};
use serde_json::{json, Value};
use std::{fmt::Write, path::Path};
use vpt_sdk::ComponentManifest;

/// `vpt plugins list [--json]`: every plugin on `search` with its tasks and designers, then the
/// files that could not be loaded. With `json`, one JSON object
/// `{plugins: [manifest + path], errors: [{path, error}], shadowed: [{path, plugin}], searched}`
/// whose manifests include each component's config schema.
pub fn cmd_plugins_list(search: &SearchPath, json: bool) -> Result<String> {
    let listing = Plugins::discover(search).list();
    if json {
        let plugins: Vec<Value> = listing
            .plugins
            .iter()
            .map(plugin_json)
            .collect::<Result<_>>()?;
        let errors: Vec<Value> = listing
            .errors
            .iter()
            .map(|(p, e)| json!({ "path": p.display().to_string(), "error": e.to_string() }))
            .collect();
        let shadowed: Vec<Value> = listing
            .shadowed
            .iter()
            .map(|(p, n)| json!({ "path": p.display().to_string(), "plugin": n }))
            .collect();
        let searched: Vec<Value> = search
            .entries()
            .iter()
            .map(
                |e| json!({ "path": e.path.display().to_string(), "origin": e.origin.to_string() }),
            )
            .collect();
        let v = json!({ "plugins": plugins, "errors": errors, "shadowed": shadowed, "searched": searched });
        return serde_json::to_string_pretty(&v)
            .map_err(|e| Error::Msg(format!("serialising the plugin list: {e}")));
    }
    let mut out = String::new();
    if listing.plugins.is_empty() {
        let _ = writeln!(out, "no plugins found (searched: {})", search.describe());
    }
    for p in &listing.plugins {
        out.push_str(&plugin_text(p, false));
    }
    for (path, name) in &listing.shadowed {
        let _ = writeln!(
            out,
            "(plugin `{name}` also at {}, shadowed by the one above)",
            path.display()
        );
    }
    if !listing.errors.is_empty() {
        let _ = writeln!(out, "could not load {} file(s):", listing.errors.len());
        for (_, e) in &listing.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    Ok(out)
}

/// Said with every inspection: reading a manifest means loading the library.
pub const LOADING_RUNS_CODE: &str = "note: a plugin is code: inspecting or using it loads the \
library, which runs its code with your permissions. Files that are not whole vpt plugins are \
refused from their headers alone, unopened; load plugins only from sources you trust.";

/// `vpt plugins inspect PATH [--verbose]`: loads one file and describes it (with `verbose`, the
/// config schemas too). A refused file is an error of a few lines; with `verbose`, an
/// abi_stable refusal carries abi_stable's full report.
pub fn cmd_plugins_inspect(path: &Path, verbose: bool) -> Result<String> {
    match load(path) {
        Ok(p) => Ok(format!(
            "{}{}{LOADING_RUNS_CODE}\n",
            plugin_text(&p, verbose),
            specs_text(&p)
        )),
        Err(Error::PluginAbi {
            path,
            message,
            details,
        }) if verbose => Err(Error::Load {
            path,
            message: format!("{message}\n\nabi_stable's report:\n{details}"),
        }),
        Err(e) => Err(e),
    }
}

/// `vpt schema NAME`: the pretty-printed JSON Schema of the task or designer called `NAME`
/// across all plugins. An ambiguous name is qualified as `plugin:name` (and, when a plugin has
/// a task and a designer of the same name, `plugin:task:name` or `plugin:designer:name`).
pub fn cmd_schema(search: &SearchPath, name: &str) -> Result<String> {
    let listing = Plugins::discover(search).list();
    let query = Query::parse(name)?;
    let all: Vec<Component<'_>> = listing.plugins.iter().flat_map(components).collect();
    let hits: Vec<&Component<'_>> = all.iter().filter(|c| query.matches(c)).collect();
    match hits.as_slice() {
        [one] => serde_json::to_string_pretty(&one.manifest.schema)
            .map_err(|e| Error::Msg(format!("serialising the schema: {e}"))),
        [] => {
            let have: Vec<String> = all.iter().map(Component::label).collect();
            let have = if have.is_empty() {
                "none".to_string()
            } else {
                have.join(", ")
            };
            let broken = match listing.errors.len() {
                0 => String::new(),
                n => format!("; {n} plugin file(s) could not be loaded, see `vpt plugins list`"),
            };
            Err(Error::Msg(format!(
                "no task or designer named `{name}` (available: {have}){broken}"
            )))
        }
        many => {
            let labels: Vec<String> = many.iter().map(|c| c.label()).collect();
            Err(Error::Msg(format!(
                "`{name}` is ambiguous: {}; name one of them",
                labels.join(", ")
            )))
        }
    }
}

/// A task or designer of a loaded plugin.
struct Component<'a> {
    plugin: &'a str,
    role: &'static str,
    manifest: &'a ComponentManifest,
}

impl Component<'_> {
    fn label(&self) -> String {
        format!("{}:{} ({})", self.plugin, self.manifest.name, self.role)
    }
}

fn components(p: &LoadedPlugin) -> Vec<Component<'_>> {
    let tasks = p.manifest.tasks.iter().map(|m| Component {
        plugin: p.name(),
        role: "task",
        manifest: m,
    });
    let designers = p.manifest.designers.iter().map(|m| Component {
        plugin: p.name(),
        role: "designer",
        manifest: m,
    });
    tasks.chain(designers).collect()
}

/// `[plugin:][task:|designer:]name`.
struct Query<'a> {
    plugin: Option<&'a str>,
    role: Option<&'a str>,
    name: &'a str,
}

impl<'a> Query<'a> {
    fn parse(s: &'a str) -> Result<Query<'a>> {
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            Error::Msg(format!("`{s}`: expected `name`, `plugin:name` or `plugin:task:name`/`plugin:designer:name`"))
        };
        let (name, qualifiers) = parts.split_last().ok_or_else(bad)?;
        let mut q = Query {
            plugin: None,
            role: None,
            name,
        };
        for part in qualifiers {
            match *part {
                "task" | "designer" if q.role.is_none() => q.role = Some(part),
                p if q.plugin.is_none() && q.role.is_none() && !p.is_empty() => q.plugin = Some(p),
                _ => return Err(bad()),
            }
        }
        if name.is_empty() {
            return Err(bad());
        }
        Ok(q)
    }

    fn matches(&self, c: &Component<'_>) -> bool {
        c.manifest.name == self.name
            && self.plugin.is_none_or(|p| p == c.plugin)
            && self.role.is_none_or(|r| r == c.role)
    }
}

fn plugin_json(p: &LoadedPlugin) -> Result<Value> {
    let mut v = serde_json::to_value(&p.manifest)
        .map_err(|e| Error::Msg(format!("serialising a manifest: {e}")))?;
    v["path"] = Value::String(p.path.display().to_string());
    Ok(v)
}

fn plugin_text(p: &LoadedPlugin, schemas: bool) -> String {
    let m = &p.manifest;
    let mut out = format!(
        "{} {}  ({}; vpt-sdk {}, {})\n",
        m.plugin,
        m.version,
        p.path.display(),
        m.sdk,
        m.torch
    );
    let rows = m
        .tasks
        .iter()
        .map(|c| ("task", "consumes", c))
        .chain(m.designers.iter().map(|c| ("designer", "produces", c)));
    for (role, verb, c) in rows {
        let _ = writeln!(
            out,
            "  {role:<8} {:<16} {verb} {}  — {}",
            c.name,
            c.kinds.join(", "),
            c.description
        );
        if schemas {
            let schema = serde_json::to_string_pretty(&c.schema).unwrap_or_default();
            for line in schema.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    out
}

/// The declared tensors of a plugin: each task's design inputs and each kind's tensors.
fn specs_text(p: &LoadedPlugin) -> String {
    let mut out = String::new();
    let mut kinds: Vec<&vpt_sdk::KindSpec> = Vec::new();
    for t in &p.manifest.tasks {
        if !t.design_inputs.is_empty() {
            let _ = writeln!(out, "  design inputs of task {}:", t.name);
        }
        for s in &t.design_inputs {
            let _ = writeln!(out, "    {s}");
        }
    }
    for c in p.manifest.tasks.iter().chain(&p.manifest.designers) {
        for k in &c.kind_specs {
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
    }
    for k in kinds {
        let _ = writeln!(out, "  kind {}:", k.name);
        for s in k.tensors.iter() {
            let _ = writeln!(out, "    {s}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse() {
        let q = Query::parse("lm:task:causal_lm").unwrap();
        assert_eq!(
            (q.plugin, q.role, q.name),
            (Some("lm"), Some("task"), "causal_lm")
        );
        let q = Query::parse("tiny_soft").unwrap();
        assert_eq!((q.plugin, q.role, q.name), (None, None, "tiny_soft"));
        let q = Query::parse("designer:x").unwrap();
        assert_eq!((q.plugin, q.role), (None, Some("designer")));
        assert!(Query::parse("a:b:c:d").is_err());
        assert!(Query::parse("lm:").is_err());
    }

    #[test]
    fn empty_search_path_lists_nothing_and_schema_says_so() {
        let s = SearchPath::only(&[]);
        assert!(cmd_plugins_list(&s, false)
            .unwrap()
            .starts_with("no plugins found"));
        let v: Value = serde_json::from_str(&cmd_plugins_list(&s, true).unwrap()).unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 0);
        let e = cmd_schema(&s, "tiny").unwrap_err().to_string();
        assert!(
            e.contains("no task or designer named `tiny` (available: none)"),
            "{e}"
        );
    }
}
