//! Errors: the rich SDK [`Error`] used inside a process, and the FFI-safe [`PluginError`].
//!
//! The rich error is not made FFI-safe on purpose: it wraps `tch::TchError`, `io::Error` and
//! `serde_json::Error`, none of which have a stable layout. It crosses the boundary flattened to a
//! kind and a message, and is rebuilt on the other side as [`Error::Plugin`].

use abi_stable::{std_types::RString, StableAbi};
use std::fmt;

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a task, a designer, or at the plugin boundary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is wrong; `field` is its dotted path (e.g. `designer.config.k`).
    #[error("config field `{field}`: {message}")]
    Config {
        /// Dotted path of the offending field.
        field: String,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
    /// A data file is malformed at a given line (1-based).
    #[error("{file}:{line}: {message}")]
    Data {
        /// Path of the data file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line.
        message: String,
    },
    /// A libtorch operation failed; `op` names what we were doing.
    #[error("{op}: {source}")]
    Tch {
        /// What we were doing (e.g. `pretrain_loss`).
        op: String,
        /// The libtorch error.
        #[source]
        source: tch::TchError,
    },
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A named tensor was expected but absent, or had the wrong shape or kind.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// Name of the tensor in its map.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// An error reported by a plugin across the boundary.
    #[error("{0}")]
    Plugin(PluginError),
    /// Anything else, with its message.
    #[error("{0}")]
    Msg(String),
}

impl From<tch::TchError> for Error {
    fn from(source: tch::TchError) -> Self {
        Error::Tch {
            op: "libtorch".into(),
            source,
        }
    }
}

impl From<PluginError> for Error {
    fn from(e: PluginError) -> Self {
        Error::Plugin(e)
    }
}

impl Error {
    /// A free-form error.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Msg(message.into())
    }
    /// A config error naming `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }
    /// A data error at `file:line`.
    pub fn data(file: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Error::Data {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    /// The config field path this error is about (config errors only; empty for the config as
    /// a whole), relative to the component's own config unless [`under`](Self::under) placed it.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Config { field, .. } => Some(field),
            Error::Plugin(p) if p.kind == ErrorKind::Config => Some(p.field.as_str()),
            _ => None,
        }
    }
    /// The same error with its config field placed under `section` (e.g. `task.config`), so
    /// that it names the field as the run config does; a field already under `section` and
    /// other errors are unchanged.
    pub fn under(self, section: &str) -> Self {
        let join = |field: &str| match field {
            "" => section.to_string(),
            f if f == section || f.starts_with(&format!("{section}.")) => f.to_string(),
            f => format!("{section}.{f}"),
        };
        match self {
            Error::Config { field, message } => Error::Config {
                field: join(&field),
                message,
            },
            Error::Plugin(mut p) if p.kind == ErrorKind::Config => {
                p.field = join(&p.field).into();
                Error::Plugin(p)
            }
            other => other,
        }
    }
    /// The FFI kind this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::Data { .. } => ErrorKind::Data,
            Error::Tch { .. } | Error::Tensor { .. } => ErrorKind::Tensor,
            Error::Io { .. } => ErrorKind::Io,
            Error::Plugin(p) => p.kind,
            Error::Msg(_) => ErrorKind::Other,
        }
    }
}

/// Adds "what we were doing" to libtorch errors: `t.f_matmul(&w).op("attention")?`.
pub trait TchContext<T> {
    /// Wraps a `TchError` with the name of the operation that failed.
    fn op(self, op: &str) -> Result<T>;
}

impl<T> TchContext<T> for std::result::Result<T, tch::TchError> {
    fn op(self, op: &str) -> Result<T> {
        self.map_err(|source| Error::Tch {
            op: op.to_string(),
            source,
        })
    }
}

/// The category of a [`PluginError`], stable across the ABI.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad configuration.
    Config,
    /// Malformed data.
    Data,
    /// A tensor operation failed or a tensor was malformed.
    Tensor,
    /// A file could not be read or written.
    Io,
    /// The plugin panicked; the panic was caught at the boundary.
    Panic,
    /// Anything else.
    Other,
}

/// An error as it crosses the plugin boundary: a kind, a message, the plugin's name and, for
/// config errors, the field path (structured, so the host never parses the message).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginError {
    /// The category.
    pub kind: ErrorKind,
    /// The message, already formatted (without the field path of a config error).
    pub message: RString,
    /// The plugin that raised it (its manifest name).
    pub plugin: RString,
    /// [`ErrorKind::Config`] only: the dotted path of the offending field, relative to the
    /// component's config (empty: the config as a whole); see [`Error::under`].
    pub field: RString,
}

impl PluginError {
    /// Flattens an SDK error raised by `plugin`.
    pub fn from_error(plugin: &str, e: &Error) -> Self {
        match e {
            Error::Config { field, message } => PluginError {
                kind: ErrorKind::Config,
                message: message.as_str().into(),
                plugin: plugin.into(),
                field: field.as_str().into(),
            },
            Error::Plugin(p) => p.clone(),
            _ => PluginError {
                kind: e.kind(),
                message: e.to_string().into(),
                plugin: plugin.into(),
                field: RString::new(),
            },
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::Config => "config error",
            ErrorKind::Data => "data error",
            ErrorKind::Tensor => "tensor error",
            ErrorKind::Io => "I/O error",
            ErrorKind::Panic => "panic",
            ErrorKind::Other => "error",
        };
        match self.kind {
            ErrorKind::Config => write!(
                f,
                "plugin `{}`: {kind}: field `{}`: {}",
                self.plugin, self.field, self.message
            ),
            _ => write!(f, "plugin `{}`: {kind}: {}", self.plugin, self.message),
        }
    }
}

impl std::error::Error for PluginError {}
