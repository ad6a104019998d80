//! File and directory paths in component configs.
//!
//! Type a config field [`InputPath`] (a file or directory the component reads) or
//! [`OutputPath`] (one it may create, e.g. a cache) instead of `String`, and the host treats it
//! as a path before the component is built: a relative path written in a config file is taken
//! relative to that file's directory, one given on the command line (`--set`) or starting with
//! an environment variable (`${VAR}/…`) relative to the working directory, and the component
//! receives the absolute path. The host also checks that an [`InputPath`] exists, naming the
//! config field and the path as resolved. The field's schema carries the mark
//! (`"format": "vpt-input-path"` / `"vpt-output-path"`, see [`INPUT_PATH_FORMAT`]), so it works
//! inside options, lists, nested tables and enum variants alike.
//!
//! A path that is already absolute is left as it is, so resolving is idempotent: a run
//! directory's `config.json` holds the resolved paths and `vpt run --resume` reads it from any
//! directory.

use schemars::{
    gen::SchemaGenerator,
    schema::{InstanceType, Schema, SchemaObject},
    JsonSchema,
};
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    ops::Deref,
    path::{Path, PathBuf},
};

/// The schema `format` of an [`InputPath`] field: resolved by the host and checked to exist.
pub const INPUT_PATH_FORMAT: &str = "vpt-input-path";
/// The schema `format` of an [`OutputPath`] field: resolved by the host, not checked.
pub const OUTPUT_PATH_FORMAT: &str = "vpt-output-path";

macro_rules! config_path {
    ($(#[$doc:meta])* $name:ident, $format:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(PathBuf);

        impl $name {
            /// The path as configured (absolute once the host has resolved it).
            pub fn as_path(&self) -> &Path {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = Path;
            fn deref(&self) -> &Path {
                &self.0
            }
        }

        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.display().fmt(f)
            }
        }

        impl<T: Into<PathBuf>> From<T> for $name {
            fn from(p: T) -> Self {
                $name(p.into())
            }
        }

        impl JsonSchema for $name {
            fn is_referenceable() -> bool {
                false
            }
            fn schema_name() -> String {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                SchemaObject {
                    instance_type: Some(InstanceType::String.into()),
                    format: Some($format.into()),
                    ..Default::default()
                }
                .into()
            }
        }
    };
}

config_path!(
    /// A file or directory a component reads, named in its config. The host resolves a relative
    /// one (see the [module docs](self)) and refuses a missing one, naming the field.
    InputPath,
    INPUT_PATH_FORMAT
);

config_path!(
    /// A file or directory a component may create (a cache, an output folder), named in its
    /// config. The host resolves a relative one like an [`InputPath`] but does not require it
    /// to exist.
    OutputPath,
    OUTPUT_PATH_FORMAT
);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, JsonSchema)]
    struct Cfg {
        data: InputPath,
        cache: Option<OutputPath>,
    }

    #[test]
    fn paths_are_plain_strings_with_a_format_in_the_schema() {
        let c: Cfg = serde_json::from_value(serde_json::json!({"data": "a/b.jsonl"})).unwrap();
        assert_eq!(c.data.as_path(), Path::new("a/b.jsonl"));
        assert_eq!(serde_json::to_value(&c.data).unwrap(), "a/b.jsonl");
        let schema = serde_json::to_value(schemars::schema_for!(Cfg)).unwrap();
        let props = &schema["properties"];
        assert_eq!(props["data"]["format"], INPUT_PATH_FORMAT);
        assert_eq!(props["cache"]["format"], OUTPUT_PATH_FORMAT);
        assert_eq!(
            props["cache"]["type"],
            serde_json::json!(["string", "null"])
        );
    }
}
