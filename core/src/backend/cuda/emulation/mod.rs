//! The engine's CUDA kernels (`kernels.cu` + `frames.cu`, the source NVRTC compiles) built
//! for the CPU with the host's C++ compiler behind a shim for the CUDA built-ins
//! (`shim.cpp`: blocks one after another, the threads of a block as fibers that meet at every
//! barrier and warp shuffle), and run over the launch grids the engine uses, so CI checks
//! every kernel's logic without a GPU: [`frames`] against the host pixel paths byte for byte,
//! [`network`] against plain references. Skips with a message where no C++ compiler runs,
//! unless `MASKDCPT_REQUIRE_NVRTC` is set (as in CI).

mod frames;
mod network;

use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use cudarc::driver::LaunchConfig;

use super::kernels::SOURCE;
use crate::pixels::{FrameDesc, PixelFormat};

/// The kernels compiled for the CPU in one storage precision.
pub(super) struct Emulated {
    library: libloading::Library,
}

/// One build of the kernels, held by one test at a time.
pub(super) struct Held {
    kernels: &'static Emulated,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Held {
    type Target = Emulated;

    fn deref(&self) -> &Emulated {
        self.kernels
    }
}

impl Emulated {
    /// The kernels with FP16 (`MASKDCPT_FP16`) or f32 storage, compiled once per test process
    /// (the frame and network tests share the f32 build) and held by one test at a time, over
    /// both builds: the shim runs a launch in global state (fibers, thread indices), and the
    /// two libraries share some of it. `__shared__` arrays of inline device functions are
    /// static locals of inline functions, which GCC gives one process-wide instance across
    /// libraries (STB_GNU_UNIQUE), so an f32 and an FP16 launch at once would race on them.
    /// `None`, with a message, where no C++ compiler runs and CI did not ask for one.
    pub(super) fn get(fp16: bool) -> Option<Held> {
        static BUILDS: [OnceLock<Option<Emulated>>; 2] = [OnceLock::new(), OnceLock::new()];
        static TURN: Mutex<()> = Mutex::new(());
        let kernels = BUILDS[usize::from(fp16)].get_or_init(|| Self::build(fp16)).as_ref()?;
        Some(Held { kernels, _turn: TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) })
    }

    fn build(fp16: bool) -> Option<Emulated> {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("kernels.cpp");
        let defines = if fp16 { "#define MASKDCPT_FP16\n" } else { "" };
        let text = [defines, include_str!("shim.cpp"), SOURCE, include_str!("driver.cpp")].concat();
        std::fs::write(&source, text).unwrap();
        let library = dir.path().join("libkernels.so");
        let compilers = std::env::var("CXX").into_iter().chain(["c++", "g++", "clang++"].map(String::from));
        for compiler in compilers {
            let status = Command::new(&compiler)
                .args(["-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-fno-strict-aliasing"])
                .args(["-shared", "-fPIC", "-w", "-o"])
                .arg(&library)
                .arg(&source)
                .status();
            match status {
                // SAFETY: a library we just built, with no initialisers beyond the C++ runtime's.
                Ok(s) if s.success() => {
                    return Some(Emulated { library: unsafe { libloading::Library::new(&library) }.unwrap() });
                }
                Ok(s) => panic!("{compiler} failed on the engine's kernels ({s})"),
                Err(_) => continue,
            }
        }
        assert!(
            std::env::var_os("MASKDCPT_REQUIRE_NVRTC").is_none(),
            "MASKDCPT_REQUIRE_NVRTC is set but no C++ compiler (CXX, c++, g++, clang++) ran"
        );
        eprintln!("skipped: no C++ compiler to build the CUDA kernels for the CPU");
        None
    }

    /// The driver entry point `emulate_{kernel}` with signature `F`.
    ///
    /// # Safety
    /// `F` must be the entry point's signature in `driver.cpp`.
    pub(super) unsafe fn entry<F: Copy>(&self, kernel: &str) -> F {
        // SAFETY: the caller names the signature.
        unsafe { *self.library.get::<F>(format!("emulate_{kernel}\0").as_bytes()).unwrap() }
    }
}

/// A launch configuration as the driver takes it: grid x, y, z, block x, y, z, then the
/// dynamic shared memory bytes.
pub(super) fn dims(config: &LaunchConfig) -> [u32; 7] {
    let (g, b) = (config.grid_dim, config.block_dim);
    [g.0, g.1, g.2, b.0, b.1, b.2, config.shared_mem_bytes]
}

/// A small deterministic byte source (xorshift).
pub(super) fn random_bytes(seed: u32) -> impl FnMut() -> u8 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 7) as u8
    }
}

/// Planes of `desc` with 8 spare bytes per row, filled from `byte` (floats in [0, 1]).
pub(super) fn random_planes(desc: &FrameDesc, byte: &mut impl FnMut() -> u8) -> Vec<(Vec<u8>, usize)> {
    let float = matches!(desc.format, PixelFormat::RgbF32 | PixelFormat::RgbF32Planar);
    let shapes = desc.plane_shapes().unwrap();
    shapes
        .iter()
        .map(|shape| {
            let stride = shape.row_bytes + 8;
            let len = stride * shape.rows;
            let data = if float {
                (0..len / 4).flat_map(|_| (f32::from(byte()) / 255.0).to_ne_bytes()).collect()
            } else {
                (0..len).map(|_| byte()).collect()
            };
            (data, stride)
        })
        .collect()
}
