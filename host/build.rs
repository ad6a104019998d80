//! Adds libtorch's lib dir to the rpath so `vpt` runs without LD_LIBRARY_PATH, and keeps
//! libtorch_cuda linked (`--no-as-needed`) when it exists so a GPU is found at run time.
fn main() {
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
