//! Where plugins are looked for: explicit `--plugin` paths, `VPT_PLUGIN_PATH`, then the default
//! install directories (next to the executable, the installation's `share/vpt/plugins`, and the
//! user's data directory).

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
};

pub use vpt_sdk::foreign::PLUGIN_PATH_VAR;

/// Where a search entry came from; decides which files of a directory count as plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `--plugin PATH` on the command line.
    Explicit,
    /// An entry of `VPT_PLUGIN_PATH`.
    Env,
    /// The directory holding the running executable (a build directory: only `libvpt_*.so`).
    ExeDir,
    /// `<exe>/../share/vpt/plugins`: the plugins installed with the executable
    /// (`make install PREFIX=…` puts `vpt` in `PREFIX/bin` and the plugins there).
    InstallDir,
    /// `$XDG_DATA_HOME/vpt/plugins` (default `~/.local/share/vpt/plugins`).
    UserDir,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Explicit => "--plugin",
            Origin::Env => PLUGIN_PATH_VAR,
            Origin::ExeDir => "next to the executable",
            Origin::InstallDir => "installed with the executable",
            Origin::UserDir => "user plugin dir",
        })
    }
}

/// One file or directory on the search path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchEntry {
    /// A plugin file, or a directory whose `*.so` files are candidates.
    pub path: PathBuf,
    /// Where the entry came from.
    pub origin: Origin,
}

/// The ordered list of places plugins are looked for; earlier entries win when two files
/// export a plugin of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchPath {
    entries: Vec<SearchEntry>,
}

impl SearchPath {
    /// The search path of this process: `explicit` (files or directories, in order), then
    /// `VPT_PLUGIN_PATH`, then the executable's directory (and, for a binary in a cargo `deps`
    /// directory, the one above it), then `<exe>/../share/vpt/plugins`, then
    /// `$XDG_DATA_HOME/vpt/plugins`.
    pub fn from_env(explicit: &[PathBuf]) -> SearchPath {
        let env = std::env::var_os(PLUGIN_PATH_VAR).map(|v| v.to_string_lossy().into_owned());
        let exe = std::env::current_exe().ok();
        SearchPath::from_parts(
            explicit,
            env.as_deref(),
            exe.as_deref(),
            user_plugin_dir().as_deref(),
        )
    }

    /// The search path built from explicit values (what [`from_env`](Self::from_env) reads from
    /// the process): `env` is a `VPT_PLUGIN_PATH` value, `exe` the running executable,
    /// `user_dir` the user plugin directory.
    pub fn from_parts(
        explicit: &[PathBuf],
        env: Option<&str>,
        exe: Option<&Path>,
        user_dir: Option<&Path>,
    ) -> SearchPath {
        let mut s = SearchPath::only(explicit);
        for part in env.unwrap_or_default().split(':').filter(|p| !p.is_empty()) {
            s.push(PathBuf::from(part), Origin::Env);
        }
        if let Some(dir) = exe.and_then(Path::parent) {
            s.push(dir.to_path_buf(), Origin::ExeDir);
            // cargo puts test and bench binaries in target/<profile>/deps; the plugins built
            // with them are uplifted one level up.
            if dir.file_name().is_some_and(|n| n == "deps") {
                if let Some(up) = dir.parent() {
                    s.push(up.to_path_buf(), Origin::ExeDir);
                }
            }
            if let Some(prefix) = dir.parent() {
                s.push(installed_plugin_dir(prefix), Origin::InstallDir);
            }
        }
        if let Some(dir) = user_dir {
            s.push(dir.to_path_buf(), Origin::UserDir);
        }
        s
    }

    /// A search path of exactly these files or directories (no environment, no defaults).
    pub fn only(paths: &[PathBuf]) -> SearchPath {
        let mut s = SearchPath::default();
        for p in paths {
            s.push(p.clone(), Origin::Explicit);
        }
        s
    }

    /// Appends an entry (duplicates are kept out).
    pub fn push(&mut self, path: PathBuf, origin: Origin) {
        if !self.entries.iter().any(|e| e.path == path) {
            self.entries.push(SearchEntry { path, origin });
        }
    }

    /// The entries, in search order.
    pub fn entries(&self) -> &[SearchEntry] {
        &self.entries
    }

    /// Candidate plugin files in search order, each file once (by canonical path and inode, so
    /// hard links such as cargo's uplifted artifacts count once). An explicit or
    /// `VPT_PLUGIN_PATH` file is a candidate whatever its name, even when missing (loading it
    /// then says why); a directory contributes its `*.so` files in name order (the executable's
    /// directory only its `libvpt_*.so`); a missing directory contributes nothing.
    pub fn candidates(&self) -> Vec<PathBuf> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for e in &self.entries {
            let files = if e.path.is_dir() {
                dir_candidates(&e.path, e.origin == Origin::ExeDir)
            } else if matches!(e.origin, Origin::Explicit | Origin::Env) {
                vec![e.path.clone()]
            } else {
                Vec::new()
            };
            for f in files {
                if seen.insert(file_identity(&f)) {
                    out.push(f);
                }
            }
        }
        out
    }

    /// One line for error messages: every entry with its origin, missing directories marked.
    pub fn describe(&self) -> String {
        if self.entries.is_empty() {
            return "nothing (no --plugin, no VPT_PLUGIN_PATH, no default directory)".into();
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| {
                let missing = if e.path.exists() { "" } else { ", missing" };
                format!("{} ({}{missing})", e.path.display(), e.origin)
            })
            .collect();
        parts.join("; ")
    }
}

/// `PREFIX/share/vpt/plugins`: where `make install PREFIX=…` puts the shipped plugins.
pub fn installed_plugin_dir(prefix: &Path) -> PathBuf {
    prefix.join("share").join("vpt").join("plugins")
}

/// `$XDG_DATA_HOME/vpt/plugins`, or `$HOME/.local/share/vpt/plugins`.
pub fn user_plugin_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base =
        xdg.or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("vpt").join("plugins"))
}

fn dir_candidates(dir: &Path, vpt_only: bool) -> Vec<PathBuf> {
    let mut files = vpt_sdk::foreign::plugin_files(dir);
    if vpt_only {
        files.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libvpt_"))
        });
    }
    files
}

/// What makes two paths the same file: (device, inode) when it exists, else the path itself.
fn file_identity(path: &Path) -> (u64, u64, PathBuf) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino(), PathBuf::new()),
        Err(_) => (
            0,
            0,
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vpt-search-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn order_is_explicit_env_exe_installed_user() {
        let s = SearchPath::from_parts(
            &[PathBuf::from("/a/x.so")],
            Some("/b::/c"),
            Some(Path::new("/t/release/deps/test-123")),
            Some(Path::new("/home/u/.local/share/vpt/plugins")),
        );
        let got: Vec<(&str, Origin)> = s
            .entries()
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/a/x.so", Origin::Explicit),
                ("/b", Origin::Env),
                ("/c", Origin::Env),
                ("/t/release/deps", Origin::ExeDir),
                ("/t/release", Origin::ExeDir),
                ("/t/release/share/vpt/plugins", Origin::InstallDir),
                ("/home/u/.local/share/vpt/plugins", Origin::UserDir),
            ]
        );
        assert!(
            s.describe().contains("/b (VPT_PLUGIN_PATH, missing)"),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn candidates_filter_and_dedup() {
        let d = temp_dir("cands");
        for f in ["libvpt_a.so", "libother.so", "notes.txt", "libvpt_b.so"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        std::fs::hard_link(d.join("libvpt_a.so"), d.join("libvpt_c.so")).unwrap();
        // The executable's directory: only libvpt_*.so, hard links once.
        let exe = SearchPath::from_parts(&[], None, Some(&d.join("vpt")), None);
        let names: Vec<String> = exe
            .candidates()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["libvpt_a.so", "libvpt_b.so"]);
        // An explicit directory: every *.so; an explicit missing file is still a candidate.
        let missing = d.join("gone.so");
        let all =
            SearchPath::only(&[d.join("libvpt_b.so"), d.clone(), missing.clone()]).candidates();
        let names: Vec<String> = all
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["libvpt_b.so", "libother.so", "libvpt_a.so", "gone.so"]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn user_dir_prefers_xdg() {
        // Only checks the shape; the environment of the test process is not modified.
        if let Some(p) = user_plugin_dir() {
            assert!(p.ends_with("vpt/plugins"));
        }
    }
}
