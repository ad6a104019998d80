//! Adds libtorch's lib dir to the rpath of this crate's own test binary so `cargo test -p
//! vpt-llama` runs without LD_LIBRARY_PATH (consumers set their own rpath).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
