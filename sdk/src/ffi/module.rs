//! The plugin's root module (an abi_stable prefix type) and the plain-C ABI stamp.

use super::{designer::DesignerBox, task::TaskBox};
use crate::PluginError;
use abi_stable::{
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString},
    StableAbi,
};

/// Name of the plain-C symbol every plugin exports: `extern "C" fn() -> *const c_char`, a
/// NUL-terminated [`abi_stamp`](crate::abi_stamp) string. The host reads it with `libloading`
/// before abi_stable's layout check, so a mismatch is refused in one line.
pub const ABI_SYMBOL: &[u8] = b"vpt_plugin_abi\0";

/// The root module every plugin exports (through [`export_plugin!`](crate::export_plugin)).
///
/// Versioning: this is a prefix type. Fields may only be added at the end, after
/// `last_prefix_field`; a host built with more fields than a plugin has refuses that plugin
/// (abi_stable issue #118), while newer plugins load into older hosts. The tag pins the
/// libtorch build: a plugin built against another libtorch is refused at load.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
#[sabi(tag = abi_stable::tag!(crate::TORCH_TAG))]
pub struct PluginMod {
    /// The plugin's [`Manifest`](crate::Manifest) as JSON.
    pub manifest: extern "C" fn() -> RResult<RString, PluginError>,
    /// Builds task `name` from a JSON config and a JSON [`BuildContext`](crate::BuildContext).
    pub new_task: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        ctx: RStr<'_>,
    ) -> RResult<TaskBox, PluginError>,
    /// Builds designer `name` from a JSON config, the task's JSON designer context and a JSON
    /// [`BuildContext`](crate::BuildContext).
    #[sabi(last_prefix_field)]
    pub new_designer: extern "C" fn(
        name: RStr<'_>,
        config: RStr<'_>,
        task_context: RStr<'_>,
        ctx: RStr<'_>,
    ) -> RResult<DesignerBox, PluginError>,
}

impl RootModule for PluginModRef {
    abi_stable::declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "vpt_plugin";
    const NAME: &'static str = "vpt plugin";
    // The SDK's own version: abi_stable refuses a plugin whose SDK is semver-incompatible.
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
