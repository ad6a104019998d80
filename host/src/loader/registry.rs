//! [`Plugins`]: the plugins of one process, found on a [`SearchPath`] and loaded lazily by name.

use super::{load, read_stamp, LoadedPlugin, Origin, SearchPath};
use crate::{Error, Result};
use std::{collections::HashMap, path::PathBuf};
use vpt_sdk::AbiStamp;

/// Plugins found on a search path. Files are only opened when a plugin is asked for
/// ([`get`](Self::get)) or everything is listed ([`list`](Self::list)); each plugin is loaded
/// once and cached. When two files export the same plugin name, the earlier one on the search
/// path wins.
pub struct Plugins {
    search: SearchPath,
    candidates: Vec<PathBuf>,
    stamps: HashMap<PathBuf, AbiStamp>,
    loaded: Vec<LoadedPlugin>,
}

/// Everything [`Plugins::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    /// The plugins that loaded, in search order.
    pub plugins: Vec<LoadedPlugin>,
    /// Files that could not be loaded, each with its (short) error.
    pub errors: Vec<(PathBuf, Error)>,
    /// Files skipped because an earlier file exports the same plugin: (file, plugin name).
    pub shadowed: Vec<(PathBuf, String)>,
}

impl Plugins {
    /// The plugins on `search` (lists the candidate files; opens none of them).
    pub fn discover(search: &SearchPath) -> Plugins {
        Plugins {
            search: search.clone(),
            candidates: search.candidates(),
            stamps: HashMap::new(),
            loaded: Vec::new(),
        }
    }

    /// The search path this registry was built from.
    pub fn search(&self) -> &SearchPath {
        &self.search
    }

    /// The candidate files, in search order.
    pub fn candidates(&self) -> &[PathBuf] {
        &self.candidates
    }

    /// The plugins loaded so far.
    pub fn loaded(&self) -> &[LoadedPlugin] {
        &self.loaded
    }

    /// The plugin called `name`: probes candidates in order (cheap) and loads the first whose
    /// stamp names `name` and which loads. When every file of that name is refused, the first
    /// refusal is returned (it says what to rebuild); when none names it,
    /// [`Error::PluginNotFound`] lists the search path, the plugins that were seen and the
    /// files that are not plugins.
    pub fn get(&mut self, name: &str) -> Result<&LoadedPlugin> {
        if let Some(i) = self.loaded.iter().position(|p| p.name() == name) {
            return Ok(&self.loaded[i]);
        }
        let mut refused: Option<Error> = None;
        let mut explicit_refusal: Option<Error> = None;
        let (mut seen, mut unreadable) = (Vec::new(), Vec::new());
        for path in self.candidates.clone() {
            let stamp = match self.stamp(&path) {
                Ok(s) => s,
                Err(e) => {
                    if self.is_explicit_file(&path) {
                        explicit_refusal.get_or_insert(e);
                    }
                    let file = path.file_name().unwrap_or(path.as_os_str());
                    unreadable.push(file.to_string_lossy().into_owned());
                    continue;
                }
            };
            if stamp.plugin != name {
                seen.push(stamp.plugin);
                continue;
            }
            // A file named with --plugin that cannot be read is the user's mistake to hear
            // about, not a reason to fall back silently to another copy found elsewhere.
            if !self.is_explicit_file(&path) {
                if let Some(e) = explicit_refusal.take() {
                    return Err(e);
                }
            }
            match load(&path) {
                Ok(p) => {
                    self.loaded.push(p);
                    return Ok(self.loaded.last().expect("just pushed"));
                }
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        if let Some(e) = refused {
            return Err(e);
        }
        seen.sort();
        seen.dedup();
        let mut searched = self.search.describe();
        if !seen.is_empty() {
            searched.push_str(&format!("; plugins found: {}", seen.join(", ")));
        }
        if !unreadable.is_empty() {
            let files = unreadable.join(", ");
            searched.push_str(&format!(
                "; not plugins or unreadable: {files} (see `vpt plugins list`)"
            ));
        }
        Err(Error::PluginNotFound {
            name: name.into(),
            searched,
        })
    }

    /// Loads every candidate. A file that fails does not stop the others: its error is
    /// collected in [`Listing::errors`].
    pub fn list(&mut self) -> Listing {
        let mut out = Listing::default();
        for path in self.candidates.clone() {
            if let Some(p) = self.loaded.iter().find(|p| p.path == path) {
                out.plugins.push(p.clone());
                continue;
            }
            let stamp = match self.stamp(&path) {
                Ok(s) => s,
                Err(e) => {
                    out.errors.push((path, e));
                    continue;
                }
            };
            if out.plugins.iter().any(|p| p.name() == stamp.plugin) {
                out.shadowed.push((path, stamp.plugin));
                continue;
            }
            match load(&path) {
                Ok(p) => {
                    if !self.loaded.iter().any(|q| q.name() == p.name()) {
                        self.loaded.push(p.clone());
                    }
                    out.plugins.push(p);
                }
                Err(e) => out.errors.push((path, e)),
            }
        }
        out
    }

    fn is_explicit_file(&self, path: &PathBuf) -> bool {
        self.search
            .entries()
            .iter()
            .any(|e| e.origin == Origin::Explicit && &e.path == path)
    }

    /// The (cached) stamp of `path`, not yet judged for compatibility.
    fn stamp(&mut self, path: &PathBuf) -> Result<AbiStamp> {
        if let Some(s) = self.stamps.get(path) {
            return Ok(s.clone());
        }
        let s = read_stamp(path)?;
        self.stamps.insert(path.clone(), s.clone());
        Ok(s)
    }
}
