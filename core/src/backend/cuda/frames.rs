//! Caller frames in device memory (`restore_device`): checking that every plane is GPU memory
//! of the engine's device large enough for its pixels, and describing the frame to the
//! `frame_in` / `frame_out` kernels.

use cudarc::driver::DeviceRepr;
use cudarc::driver::sys::{self, CUmemorytype, CUpointer_attribute};

use crate::error::{Error, Result};
use crate::pixels::{DeviceFrame, PixelFormat, Sample};

/// A frame as the kernels take it (`struct Frame` in frames.cu, 104 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameArgs {
    planes: [u64; 3],
    strides: [i64; 3],
    width: i32,
    height: i32,
    /// 0 packed, 1 planar f32, 2 NV12.
    kind: i32,
    /// Packed: 0 u8, 1 u16, 2 f32.
    sample: i32,
    channels: i32,
    rgb: [i32; 3],
    /// Sample index of alpha, or −1.
    alpha: i32,
    kr: f32,
    kb: f32,
    offset: f32,
    luma_scale: f32,
    chroma_scale: f32,
}

const _: () = assert!(size_of::<FrameArgs>() == 104);

// SAFETY: plain `repr(C)` data matching the kernels' struct.
unsafe impl DeviceRepr for FrameArgs {}

impl FrameArgs {
    /// The kernels' description of `frame` (checked with [`check`] first).
    pub fn new(frame: &DeviceFrame) -> Result<Self> {
        let desc = &frame.desc;
        let int = |v: usize, what: &str| {
            i32::try_from(v)
                .map_err(|_| Error::InvalidImage(format!("frame {what} {v} exceeds the CUDA kernels' range")))
        };
        let stride =
            |v: usize| i64::try_from(v).map_err(|_| Error::InvalidArgument(format!("row stride {v} is too large")));
        let mut args = FrameArgs {
            planes: [0; 3],
            strides: [0; 3],
            width: int(desc.width, "width")?,
            height: int(desc.height, "height")?,
            kind: 0,
            sample: 0,
            channels: 0,
            rgb: [0; 3],
            alpha: -1,
            kr: 0.0,
            kb: 0.0,
            offset: 0.0,
            luma_scale: 1.0,
            chroma_scale: 1.0,
        };
        for (i, &(address, row)) in frame.planes.iter().enumerate().take(3) {
            args.planes[i] = address;
            args.strides[i] = stride(row)?;
        }
        match desc.format.packed() {
            Some(p) => {
                args.sample = match p.sample {
                    Sample::U8 => 0,
                    Sample::U16 => 1,
                    Sample::F32 => 2,
                };
                args.channels = p.channels as i32;
                args.rgb = p.rgb.map(|c| c as i32);
                args.alpha = p.alpha.map_or(-1, |a| a as i32);
            }
            None if desc.format == PixelFormat::RgbF32Planar => args.kind = 1,
            None => {
                args.kind = 2;
                (args.kr, args.kb) = desc.yuv.kr_kb();
                (args.offset, args.luma_scale, args.chroma_scale) = desc.yuv.range();
            }
        }
        Ok(args)
    }
}

/// Bytes every plane address and stride of `format` must be a multiple of (its sample size).
fn alignment(format: PixelFormat) -> usize {
    match (format.packed(), format) {
        (Some(p), _) => p.sample.size(),
        (None, PixelFormat::RgbF32Planar) => 4,
        _ => 1,
    }
}

/// Checks `frame` (called `what` in messages): plane count, strides and alignment from its
/// description alone, then through `attribute` (the driver's pointer query: memory type,
/// device ordinal, owning context, allocation start and size) that every plane is
/// GPU-accessible memory of device `ordinal` in the engine's `context` holding all of its
/// pixels. Returns the frame as the kernels address it: page-locked host planes by their
/// device pointer (registered host memory may have one other than its host address, as on
/// platforms without `CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM`).
pub fn check(
    frame: &DeviceFrame,
    what: &str,
    (ordinal, context): (usize, u64),
    attribute: impl Fn(CUpointer_attribute, u64) -> Option<u64>,
) -> Result<DeviceFrame> {
    let mut addressed = frame.clone();
    let strides: Vec<usize> = frame.planes.iter().map(|&(_, stride)| stride).collect();
    let spans = frame.desc.plane_spans(&strides).map_err(|e| Error::InvalidArgument(format!("{what}: {e}")))?;
    let align = alignment(frame.desc.format);
    let format = frame.desc.format.name();
    for (i, ((&(address, stride), span), plane)) in
        frame.planes.iter().zip(spans).zip(&mut addressed.planes).enumerate()
    {
        if address % align as u64 != 0 || stride % align != 0 {
            return Err(Error::InvalidArgument(format!(
                "{what} plane {i}: {format} needs its address and row stride to be multiples of {align} bytes \
                 (address {address:#x}, stride {stride})"
            )));
        }
        let not_gpu = || {
            Error::InvalidArgument(format!(
                "{what} plane {i} at {address:#x} is not memory the CUDA driver knows (host memory from malloc?): \
                 pass device, managed or pinned memory, or call maskdcpt_restore for host frames"
            ))
        };
        let kind = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE, address).ok_or_else(not_gpu)?;
        if kind == CUmemorytype::CU_MEMORYTYPE_DEVICE as u64
            && let Some(device) = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, address)
            && device != ordinal as u64
        {
            return Err(Error::InvalidArgument(format!(
                "{what} plane {i} is memory of CUDA device {device}, the engine runs on device {ordinal}"
            )));
        }
        // Device memory of another context on the same device (a decoder's own context, say)
        // is not mapped in the engine's: its kernels would fault on it. (Memory of no context,
        // as virtual-memory-management allocations report, is not refused.)
        if kind == CUmemorytype::CU_MEMORYTYPE_DEVICE as u64
            && let Some(owner) = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT, address)
            && owner != 0
            && owner != context
        {
            return Err(Error::InvalidArgument(format!(
                "{what} plane {i} was allocated in another CUDA context than the engine's (the device's \
                 primary context): allocate frames in the primary context (cudaMalloc, or cuDevicePrimaryCtxRetain \
                 with the driver API)"
            )));
        }
        if kind == CUmemorytype::CU_MEMORYTYPE_HOST as u64
            && let Some(device_address) = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER, address)
        {
            plane.0 = device_address;
        }
        let start = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, address);
        let size = attribute(CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_SIZE, address);
        if let (Some(start), Some(size)) = (start, size)
            && address.checked_add(span as u64).is_none_or(|end| end > start.saturating_add(size))
        {
            return Err(Error::InvalidArgument(format!(
                "{what} plane {i}: its pixels span {span} bytes from {address:#x}, past the end of its allocation \
                 ({size} bytes from {start:#x})"
            )));
        }
    }
    Ok(addressed)
}

/// The driver's answer to a pointer query (`None` when it does not know the pointer).
pub fn driver_attribute(attribute: CUpointer_attribute, address: u64) -> Option<u64> {
    use CUpointer_attribute as A;
    let result = match attribute {
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE | A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => {
            // 32-bit values; the others (context, device pointer, range) are 64-bit.
            let mut value: u32 = 0;
            // SAFETY: both attributes are 32-bit values written into `value`.
            unsafe { sys::cuPointerGetAttribute((&raw mut value).cast(), attribute, address) }
                .result()
                .map(|()| u64::from(value))
        }
        _ => {
            let mut value: u64 = 0;
            // SAFETY: the range attributes are 64-bit values written into `value`.
            unsafe { sys::cuPointerGetAttribute((&raw mut value).cast(), attribute, address) }.result().map(|()| value)
        }
    };
    result.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pixels::{FrameDesc, YuvMatrix};

    fn frame(format: PixelFormat, width: usize, height: usize, planes: Vec<(u64, usize)>) -> DeviceFrame {
        DeviceFrame { desc: FrameDesc { format, width, height, yuv: YuvMatrix::Bt601Limited }, planes }
    }

    /// The engine's context in these tests.
    const OURS: u64 = 0xC0;

    /// A fake driver: one device allocation of `size` bytes at 0x10000 on device 0, in the
    /// context `owner`.
    fn driver_in(size: u64, owner: u64) -> impl Fn(CUpointer_attribute, u64) -> Option<u64> {
        move |attribute, address| {
            let inside = (0x10000..0x10000 + size).contains(&address);
            inside.then_some(match attribute {
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => CUmemorytype::CU_MEMORYTYPE_DEVICE as u64,
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => 0,
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT => owner,
                CUpointer_attribute::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR => 0x10000,
                _ => size,
            })
        }
    }

    /// The fake driver's allocation in the engine's context.
    fn driver(size: u64) -> impl Fn(CUpointer_attribute, u64) -> Option<u64> {
        driver_in(size, OURS)
    }

    #[test]
    fn good_frames_pass_and_bad_ones_are_named() {
        let rgb8 = frame(PixelFormat::Rgb8, 10, 4, vec![(0x10000, 32)]);
        assert!(check(&rgb8, "input", (0, OURS), driver(32 * 3 + 30)).is_ok());
        let err = |f: &DeviceFrame, size: u64, ordinal: usize| {
            check(f, "input", (ordinal, OURS), driver(size)).unwrap_err().to_string()
        };
        let foreign = check(&rgb8, "input", (0, OURS), driver_in(200, 0xD0)).unwrap_err().to_string();
        assert!(foreign.contains("another CUDA context"), "{foreign}");
        assert!(check(&rgb8, "input", (0, OURS), driver_in(200, 0)).is_ok(), "memory of no context");
        assert_eq!(check(&rgb8, "input", (0, OURS), driver(200)).unwrap(), rgb8, "device memory as it is");
        // Registered host memory whose device pointer differs from its host address.
        let registered = |attribute, address| match attribute {
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => Some(CUmemorytype::CU_MEMORYTYPE_HOST as u64),
            CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => Some(address + 0x5000_0000),
            _ => None,
        };
        let mapped = check(&rgb8, "input", (0, OURS), registered).unwrap();
        assert_eq!(mapped.planes, vec![(0x5001_0000, 32)]);
        assert!(err(&rgb8, 32 * 3 + 29, 0).contains("past the end of its allocation"));
        assert!(err(&rgb8, 200, 1).contains("device 0, the engine runs on device 1"));
        let host = frame(PixelFormat::Rgb8, 10, 4, vec![(0x9000, 32)]);
        assert!(err(&host, 200, 0).contains("not memory the CUDA driver knows"));
        let narrow = frame(PixelFormat::Rgb8, 10, 4, vec![(0x10000, 29)]);
        assert!(err(&narrow, 200, 0).contains("smaller than a row"));
        let odd = frame(PixelFormat::Rgb16, 4, 2, vec![(0x10001, 24)]);
        assert!(err(&odd, 200, 0).contains("multiples of 2 bytes"));
        let planar = frame(PixelFormat::RgbF32Planar, 4, 2, vec![(0x10000, 16), (0x10020, 18), (0x10040, 16)]);
        assert!(err(&planar, 200, 0).contains("multiples of 4 bytes"));
        let missing = frame(PixelFormat::Nv12, 4, 2, vec![(0x10000, 4)]);
        assert!(err(&missing, 200, 0).contains("has 2 plane(s), got 1"));
        let odd_nv12 = frame(PixelFormat::Nv12, 3, 2, vec![(0x10000, 4), (0x10010, 4)]);
        assert!(err(&odd_nv12, 200, 0).contains("even width and height"));
    }

    #[test]
    fn kernel_descriptions_follow_the_formats() {
        let bgra = FrameArgs::new(&frame(PixelFormat::Bgra8, 6, 5, vec![(0x10000, 24)])).unwrap();
        assert_eq!((bgra.kind, bgra.sample, bgra.channels, bgra.rgb, bgra.alpha), (0, 0, 4, [2, 1, 0], 3));
        assert_eq!((bgra.width, bgra.height, bgra.planes[0], bgra.strides[0]), (6, 5, 0x10000, 24));
        let rgb16 = FrameArgs::new(&frame(PixelFormat::Rgb16, 2, 2, vec![(0, 12)])).unwrap();
        assert_eq!((rgb16.sample, rgb16.alpha), (1, -1));
        let planar = FrameArgs::new(&frame(PixelFormat::RgbF32Planar, 2, 2, vec![(0, 8), (64, 8), (128, 8)])).unwrap();
        assert_eq!((planar.kind, planar.planes), (1, [0, 64, 128]));
        let nv12 = FrameArgs::new(&DeviceFrame {
            desc: FrameDesc { format: PixelFormat::Nv12, width: 2, height: 2, yuv: YuvMatrix::Bt709Limited },
            planes: vec![(0, 2), (64, 2)],
        })
        .unwrap();
        assert_eq!((nv12.kind, nv12.kr, nv12.kb, nv12.offset, nv12.luma_scale), (2, 0.2126, 0.0722, 16.0, 219.0));
    }
}
