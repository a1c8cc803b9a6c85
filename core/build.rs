//! Compiles the TensorRT shim (`src/backend/tensorrt/shim.cpp`) when the `tensorrt` feature
//! is on. The shim links neither TensorRT nor CUDA (it opens them with dlopen), so only
//! headers are needed: TensorRT's from `TENSORRT_INCLUDE_DIR` or a standard location, CUDA's
//! from `CUDA_INCLUDE_DIR`, `/usr/local/cuda/include` or, failing both, a committed stub that
//! declares the two handle types TensorRT's headers name.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tensorrt")]
    tensorrt::compile();
}

#[cfg(feature = "tensorrt")]
mod tensorrt {
    use std::path::PathBuf;

    const DIR: &str = "src/backend/tensorrt";

    /// The first folder of `candidates` that holds `header`.
    fn find(env: &str, defaults: &[&str], header: &str) -> Option<PathBuf> {
        println!("cargo:rerun-if-env-changed={env}");
        let from_env = std::env::var_os(env).map(PathBuf::from);
        from_env.into_iter().chain(defaults.iter().map(PathBuf::from)).find(|d| d.join(header).is_file())
    }

    pub fn compile() {
        for f in ["shim.cpp", "shim.h", "cuda_stub/cuda_runtime_api.h"] {
            println!("cargo:rerun-if-changed={DIR}/{f}");
        }
        let trt = find(
            "TENSORRT_INCLUDE_DIR",
            &[
                "/usr/include/x86_64-linux-gnu",
                "/usr/include/aarch64-linux-gnu",
                "/usr/include",
                "/usr/local/tensorrt/include",
            ],
            "NvInfer.h",
        )
        .unwrap_or_else(|| {
            panic!(
                "feature `tensorrt`: no TensorRT headers (NvInfer.h) found; set TENSORRT_INCLUDE_DIR to the folder \
                 holding NvInfer.h (scripts/test-tensorrt.sh shows how to use the headers of the trtx-sys crate)"
            )
        });
        let cuda = find("CUDA_INCLUDE_DIR", &["/usr/local/cuda/include"], "cuda_runtime_api.h")
            .unwrap_or_else(|| PathBuf::from(DIR).join("cuda_stub"));
        let mut build = cc::Build::new();
        build.cpp(true).std("c++17").file(format!("{DIR}/shim.cpp")).include(DIR);
        // CUDA first: trtx-sys's header folder carries a dangling cuda_runtime_api.h link.
        // System includes, so warnings inside TensorRT's headers do not fail the build.
        for dir in [&cuda, &trt] {
            build.flag("-isystem").flag(dir.as_os_str());
        }
        build.warnings(true).extra_warnings(true).warnings_into_errors(true);
        build.compile("maskdcpt_trt_shim");
        println!("cargo:rustc-link-lib=dl");
    }
}
