//! Adds libtorch's lib dir to the rpath of this crate's own test binaries (the harness tests in
//! `src/testing` run libtorch). A build script's link args never reach the crates that depend on
//! vpt-sdk: each plugin keeps its own build.rs.
fn main() {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
