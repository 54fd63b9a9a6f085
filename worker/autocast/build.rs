//! Compiles csrc/autocast.cpp against the libtorch that torch-sys links (its headers sit beside
//! the `lib` directory torch-sys reports as `DEP_TCH_LIBTORCH_LIB`), with the same C++ ABI flag
//! torch-sys uses (`LIBTORCH_CXX11_ABI`, default 1 as in PyTorch's own wheels), and gives this
//! crate's own test binary an rpath to libtorch.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB is not set: torch-sys did not find libtorch");
    };
    let root = PathBuf::from(&lib_dir)
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(&lib_dir));
    // This crate's own test binary runs without LD_LIBRARY_PATH too.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/autocast.cpp")
        .compile("advsweep_autocast");
}
