//! Link-time set-up for libtorch.
//!
//! * Embeds an rpath to libtorch's directory so `advsweep-worker` runs without
//!   `LD_LIBRARY_PATH`.
//! * Forces `libtorch_cuda.so` into NEEDED when it exists: the default `--as-needed` link drops
//!   it (nothing references its symbols directly), and CUDA then silently disappears at run time.
//!
//! `DEP_TCH_LIBTORCH_LIB` comes from torch-sys (`links = "tch"`), which we depend on directly.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB not set; binaries will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    if std::path::Path::new(&lib_dir)
        .join("libtorch_cuda.so")
        .exists()
    {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
