//! Finds libtorch at run time without LD_LIBRARY_PATH (rpath to `$LIBTORCH/lib`), and with the
//! `cuda` feature keeps `libtorch.so` linked so CUDA is visible (tch-rs issue 980).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
