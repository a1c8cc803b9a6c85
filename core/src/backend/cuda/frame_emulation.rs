//! The frame kernels (`frames.cu`) compiled for the CPU with the host's C++ compiler and run
//! thread by thread over the launch grid `restore_device` uses, against the host path
//! (`pixels::decode` + padding, cropping + `pixels::encode`), byte for byte, in every pixel
//! format. The kernels are plain per-thread code (no shared memory, no warp operations), so
//! running their threads one after another is what the GPU computes; CUDA's round-to-nearest
//! intrinsics become plain IEEE operations with contraction off. Skips with a message where no
//! C++ compiler is found, unless `MASKDCPT_REQUIRE_NVRTC` is set (as in CI).

use std::path::Path;
use std::process::Command;

use super::frames::FrameArgs;
use crate::image::{from_planar_cropped, pad_planar_into};
use crate::pixels::{DeviceFrame, FrameDesc, PixelFormat, PlaneMut, PlaneRef, YuvMatrix, decode, encode};
use crate::spec::{IMAGE_CHANNELS, PadMode};

/// What the CUDA headers and runtime give the kernels, for a C++ compiler.
const SHIM: &str = r#"
#include <math.h>
#define __device__
#define __global__
#define __forceinline__ inline
#define __restrict__ __restrict
typedef long long i64;
struct Index { unsigned x; };
static Index blockIdx, threadIdx, blockDim;
static inline i64 global_index() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
"#;

/// Runs every thread of a 256-thread-block grid covering `items` (engine.rs `frame_grid`).
const DRIVER: &str = r#"
template <class F> static void grid(i64 items, F body) {
    blockDim.x = 256;
    i64 blocks = items / 256 + (items % 256 != 0);
    if (blocks == 0) blocks = 1;
    for (i64 t = 0; t < blocks * 256; t++) {
        blockIdx.x = (unsigned)(t / 256);
        threadIdx.x = (unsigned)(t % 256);
        body();
    }
}
extern "C" void emulate_frame_in(const Frame* f, float* img, int h, int w, int reflect) {
    grid((i64)h * w, [&] { frame_in(*f, img, h, w, reflect); });
}
extern "C" void emulate_frame_out(const float* img, int h, int w, const Frame* f, const Frame* src, i64 items) {
    grid(items, [&] { frame_out(img, h, w, *f, *src); });
}
"#;

type FrameIn = unsafe extern "C" fn(*const FrameArgs, *mut f32, i32, i32, i32);
type FrameOut = unsafe extern "C" fn(*const f32, i32, i32, *const FrameArgs, *const FrameArgs, i64);

/// Compiles the frame kernels into a shared library in `dir`; `None` when no compiler runs.
fn compile(dir: &Path) -> Option<libloading::Library> {
    let source = dir.join("frames.cpp");
    std::fs::write(&source, [SHIM, include_str!("frames.cu"), DRIVER].concat()).unwrap();
    let library = dir.join("libframes.so");
    let compilers = std::env::var("CXX").into_iter().chain(["c++", "g++", "clang++"].map(String::from));
    for compiler in compilers {
        let status = Command::new(&compiler)
            .args(["-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-w", "-o"])
            .arg(&library)
            .arg(&source)
            .status();
        match status {
            Ok(s) if s.success() => {
                // SAFETY: a library we just built, with no initialisers beyond the C++ runtime's.
                return Some(unsafe { libloading::Library::new(&library) }.unwrap());
            }
            Ok(s) => panic!("{compiler} failed on the frame kernels ({s})"),
            Err(_) => continue,
        }
    }
    None
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

/// `planes` described as a frame (host addresses: the kernels run on the CPU here).
fn device_frame(desc: FrameDesc, planes: &mut [(Vec<u8>, usize)]) -> DeviceFrame {
    DeviceFrame { desc, planes: planes.iter_mut().map(|(data, stride)| (data.as_mut_ptr() as u64, *stride)).collect() }
}

#[test]
fn frame_kernels_give_the_host_paths_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(library) = compile(dir.path()) else {
        assert!(
            std::env::var_os("MASKDCPT_REQUIRE_NVRTC").is_none(),
            "MASKDCPT_REQUIRE_NVRTC is set but no C++ compiler (CXX, c++, g++, clang++) ran"
        );
        eprintln!("skipped: no C++ compiler to build the frame kernels for the CPU");
        return;
    };
    // SAFETY: the signatures of DRIVER's functions; `Frame` is `FrameArgs` (both 104-byte repr(C)).
    let (frame_in, frame_out) = unsafe {
        (*library.get::<FrameIn>(b"emulate_frame_in").unwrap(), *library.get::<FrameOut>(b"emulate_frame_out").unwrap())
    };
    let mut byte = random_bytes(7);
    let yuvs = [YuvMatrix::Bt601Limited, YuvMatrix::Bt601Full, YuvMatrix::Bt709Limited];
    let cases = PixelFormat::ALL.into_iter().flat_map(|f| [(f, (34, 22)), (f, (14, 6))]).zip(yuvs.into_iter().cycle());
    for ((format, (w, h)), yuv) in cases {
        let desc = FrameDesc { format, width: w, height: h, yuv };
        let mut input = random_planes(&desc, &mut byte);
        let refs: Vec<PlaneRef> = input.iter().map(|(data, stride)| PlaneRef { data, stride: *stride }).collect();
        let decoded = decode(&desc, &refs).unwrap();
        let input_args = FrameArgs::new(&device_frame(desc, &mut input)).unwrap();
        let (ph, pw) = (h + 10, w + 14);
        for mode in [PadMode::Reflect, PadMode::Zero] {
            let mut want = vec![0.0f32; IMAGE_CHANNELS * ph * pw];
            pad_planar_into(&decoded.image, ph, pw, mode, &mut want);
            let mut got = vec![f32::NAN; want.len()];
            let reflect = i32::from(mode == PadMode::Reflect);
            // SAFETY: the frame's planes are live and span its pixels; `got` holds 3 × ph × pw.
            unsafe { frame_in(&input_args, got.as_mut_ptr(), ph as i32, pw as i32, reflect) };
            let wrong = want.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(wrong, 0, "frame_in {} {w}×{h} {yuv:?} {mode:?}: {wrong} values differ", format.name());
        }

        // A network output a little outside [0, 1], as restored images are.
        let output: Vec<f32> = (0..IMAGE_CHANNELS * ph * pw).map(|_| f32::from(byte()) / 212.0 - 0.1).collect();
        let restored = from_planar_cropped(&output, ph, pw, w, h);
        let mut want = input.clone();
        let mut muts: Vec<PlaneMut> =
            want.iter_mut().map(|(data, stride)| PlaneMut { data, stride: *stride }).collect();
        encode(&desc, &restored, decoded.alpha.as_deref(), &mut muts).unwrap();
        for in_place in [false, true] {
            let mut target = input.clone();
            let target_args = FrameArgs::new(&device_frame(desc, &mut target)).unwrap();
            let source_args = if in_place { target_args } else { input_args };
            let items = if format == PixelFormat::Nv12 { (w / 2) * (h / 2) } else { w * h };
            // SAFETY: as above; the target planes are the same size as the input's.
            unsafe { frame_out(output.as_ptr(), ph as i32, pw as i32, &target_args, &source_args, items as i64) };
            for (i, ((got, _), (want, _))) in target.iter_mut().zip(&want).enumerate() {
                let wrong = got.iter().zip(want).filter(|(a, b)| a != b).count();
                assert_eq!(
                    wrong,
                    0,
                    "frame_out {} {w}×{h} {yuv:?} in place {in_place}: plane {i}, {wrong} bytes differ",
                    format.name()
                );
            }
        }
    }
}
