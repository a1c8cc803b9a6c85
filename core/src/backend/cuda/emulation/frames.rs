//! The frame kernels (`frames.cu`) against the host path (`pixels::decode` + padding,
//! cropping + `pixels::encode`), byte for byte, in every pixel format, YUV matrix and padding
//! mode, in place and not, over the launch grid `restore_device` uses. The kernels use CUDA's
//! round-to-nearest intrinsics, which the emulation runs as plain IEEE operations.

use super::{Emulated, dims, random_bytes, random_planes};
use crate::backend::cuda::frames::FrameArgs;
use crate::backend::cuda::instance::grid_for;
use crate::image::{from_planar_cropped, pad_planar_into};
use crate::pixels::{DeviceFrame, FrameDesc, PixelFormat, PlaneMut, PlaneRef, YuvMatrix, decode, encode};
use crate::spec::{IMAGE_CHANNELS, PadMode};

type FrameIn = unsafe extern "C" fn(*const u32, *const FrameArgs, *mut f32, i32, i32, i32) -> i32;
type FrameOut = unsafe extern "C" fn(*const u32, *const f32, i32, i32, *const FrameArgs, *const FrameArgs) -> i32;

/// `planes` described as a frame (host addresses: the kernels run on the CPU here).
fn device_frame(desc: FrameDesc, planes: &mut [(Vec<u8>, usize)]) -> DeviceFrame {
    DeviceFrame { desc, planes: planes.iter_mut().map(|(data, stride)| (data.as_mut_ptr() as u64, *stride)).collect() }
}

#[test]
fn frame_kernels_give_the_host_paths_bytes() {
    let Some(kernels) = Emulated::get(false) else { return };
    // SAFETY: the signatures in driver.cpp; `Frame` is `FrameArgs` (both 104-byte repr(C)).
    let (frame_in, frame_out) =
        unsafe { (kernels.entry::<FrameIn>("frame_in"), kernels.entry::<FrameOut>("frame_out")) };
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
            let grid = dims(&grid_for(ph * pw).unwrap());
            let diverged =
                unsafe { frame_in(grid.as_ptr(), &input_args, got.as_mut_ptr(), ph as i32, pw as i32, reflect) };
            assert_eq!(diverged, 0);
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
            let grid = dims(&grid_for(items).unwrap());
            let diverged =
                unsafe { frame_out(grid.as_ptr(), output.as_ptr(), ph as i32, pw as i32, &target_args, &source_args) };
            assert_eq!(diverged, 0);
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
