//! Gives the shared library a versioned soname, `libmaskdcpt.so.<MAJOR>` (`.so.0` while the
//! version is 0.x; the run-time check `maskdcpt_abi_version()` guards 0.x updates).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmaskdcpt.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
