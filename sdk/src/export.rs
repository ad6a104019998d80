//! [`export_plugin!`]: the one macro a plugin invokes to become loadable.

/// Exports a plugin: its root module (abi_stable, tagged with the libtorch build) and the
/// plain-C `vpt_plugin_abi` stamp the host probes first. Every entry point is wrapped in
/// `catch_unwind` and returns a structured [`PluginError`](crate::PluginError).
///
/// The plugin crate must be a `cdylib` and depend on `abi_stable` (=0.11.3) as well as `vpt-sdk`,
/// because abi_stable's root-module attribute names its own crate by absolute path.
///
/// ```ignore
/// vpt_sdk::export_plugin! {
///     name: "lm",
///     tasks: [task::CausalLm],
///     designers: [designer::TopKSoft, designer::UniformTopK],
/// }
/// ```
#[macro_export]
macro_rules! export_plugin {
    (name: $name:literal, tasks: [$($task:ty),* $(,)?], designers: [$($designer:ty),* $(,)?] $(,)?) => {
        /// This plugin's registry (its own list; registrations never cross a dlopen boundary).
        pub fn vpt_registry() -> $crate::Registry {
            $crate::Registry {
                plugin: $name,
                version: env!("CARGO_PKG_VERSION"),
                tasks: vec![$($crate::TaskEntry::of::<$task>()),*],
                designers: vec![$($crate::DesignerEntry::of::<$designer>()),*],
            }
        }

        extern "C" fn __vpt_manifest() -> $crate::abi_stable::std_types::RResult<
            $crate::abi_stable::std_types::RString, $crate::PluginError> {
            $crate::registry::export_manifest(&vpt_registry())
        }

        extern "C" fn __vpt_new_task(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::ffi::task::TaskBox, $crate::PluginError> {
            $crate::registry::export_new_task(&vpt_registry(), name, config, ctx)
        }

        extern "C" fn __vpt_new_designer(
            name: $crate::abi_stable::std_types::RStr<'_>,
            config: $crate::abi_stable::std_types::RStr<'_>,
            task_ctx: $crate::abi_stable::std_types::RStr<'_>,
            ctx: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<$crate::ffi::designer::DesignerBox, $crate::PluginError> {
            $crate::registry::export_new_designer(&vpt_registry(), name, config, task_ctx, ctx)
        }

        /// The root module abi_stable loads.
        #[$crate::abi_stable::export_root_module]
        pub fn vpt_root_module() -> $crate::ffi::module::PluginModRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::ffi::module::PluginMod {
                manifest: __vpt_manifest,
                new_task: __vpt_new_task,
                new_designer: __vpt_new_designer,
            }
            .leak_into_prefix()
        }

        /// Plain-C ABI stamp, read by the host before abi_stable's layout check.
        #[no_mangle]
        pub extern "C" fn vpt_plugin_abi() -> *const ::std::ffi::c_char {
            static STAMP: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
            STAMP
                .get_or_init(|| {
                    ::std::ffi::CString::new($crate::abi_stamp($name)).expect("stamp has no NUL")
                })
                .as_ptr()
        }
    };
}
