//! The host's error enum: each variant names the plugin, config field, file or step involved.

use std::path::PathBuf;

/// The host's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the host reports to the user.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is wrong; `field` is its dotted path.
    #[error("config field `{field}`: {message}")]
    Config {
        /// Dotted path, e.g. `meta.period`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A plugin file could not be loaded (short, one-paragraph message).
    #[error("cannot load plugin {}: {message}", path.display())]
    Load {
        /// The file we tried.
        path: PathBuf,
        /// Why, in a sentence or two (the full abi_stable report is behind --verbose).
        message: String,
    },
    /// No plugin of that name was found on the search path.
    #[error("no plugin named `{name}` found (searched: {searched})")]
    PluginNotFound {
        /// The plugin name from the config.
        name: String,
        /// The directories and files searched.
        searched: String,
    },
    /// An error from a task, a designer or the SDK.
    #[error(transparent)]
    Sdk(#[from] vpt_sdk::Error),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint or run directory is unusable.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A loss or gradient was NaN/inf where the run cannot continue.
    #[error("non-finite {what} at step {step}")]
    NonFinite {
        /// Which quantity.
        what: String,
        /// Learner step.
        step: u64,
    },
    /// A libtorch operation in the host failed.
    #[error("{op}: {source}")]
    Tch {
        /// What the host was doing.
        op: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// The run was stopped by SIGINT/SIGTERM after a checkpoint.
    #[error("interrupted: stopped after step {step} and saved a checkpoint; resume with `vpt run --resume {}`", run_dir.display())]
    Interrupted {
        /// The last completed learner step.
        step: u64,
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Anything else.
    #[error("{0}")]
    Msg(String),
    /// abi_stable's layout check refused a plugin whose ABI stamp matched this host: a short
    /// summary for the user, and abi_stable's full report (hundreds of lines) for `--verbose`.
    #[error("cannot load plugin {}: {message}", path.display())]
    PluginAbi {
        /// The plugin file.
        path: PathBuf,
        /// Which plugin, and what to rebuild.
        message: String,
        /// abi_stable's full report.
        details: String,
    },
    /// A `vpt compare` was stopped by SIGINT/SIGTERM: its finished runs are kept and the run
    /// it was in saved a checkpoint.
    #[error("interrupted: {what}; continue the comparison with `{command}`")]
    CompareInterrupted {
        /// Where it stopped.
        what: String,
        /// The command that continues it.
        command: String,
    },
}

impl Error {
    /// A config error naming `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }
    /// Whether the user stopped the command (SIGINT/SIGTERM) after it saved its work.
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            Error::Interrupted { .. } | Error::CompareInterrupted { .. }
        )
    }
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `s`, cut to `n` characters with an ellipsis (for echoing untrusted text in errors).
pub fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut out: String = s.chars().take(n).collect();
    out.push('…');
    out
}

/// `message` with every run of more than `n` non-blank characters clipped to `n` (so a huge
/// bad name echoed inside an error does not flood the terminal).
pub fn clip_words(message: &str, n: usize) -> String {
    let mut out = String::with_capacity(message.len().min(1 << 16));
    let mut word = String::new();
    for c in message.chars().chain(std::iter::once('\n')) {
        if c.is_whitespace() {
            out.push_str(&clip(&word, n));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.pop();
    out
}

impl From<tch::TchError> for Error {
    fn from(source: tch::TchError) -> Self {
        Error::Tch {
            op: "libtorch".into(),
            source,
        }
    }
}

/// Adds the name of the host operation to a libtorch error.
pub trait HostTchContext<T> {
    /// Wraps a `TchError` with `op`.
    fn op(self, op: &str) -> Result<T>;
}

impl<T> HostTchContext<T> for std::result::Result<T, tch::TchError> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|source| Error::Tch {
            op: op.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_are_clipped_and_the_rest_kept() {
        let long = "x".repeat(1000);
        let m = clip_words(&format!("no task `{long}`\n  in plugin tiny"), 10);
        assert_eq!(m, "no task `xxxxxxxxx…\n  in plugin tiny");
    }
}
