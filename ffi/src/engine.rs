//! `maskdcpt_engine`: a network compiled for one backend from a model and options, and the
//! calls that run it.
//!
//! Threading contract: an engine is internally synchronised. Any number of threads may call
//! `maskdcpt_restore` / `maskdcpt_classify` on one engine at the same time (each call gets its
//! own scratch memory); only `maskdcpt_engine_free` must not race with other calls.

use std::ffi::c_void;

use maskdcpt_core::backend::{Engine, build_engine};
use maskdcpt_core::pixels;

use crate::args::{Out, arg, free_and_null};
use crate::image::{Frame, maskdcpt_image};
use crate::model::{NO_CLASSIFIER, maskdcpt_model};
use crate::options::maskdcpt_options;
use crate::status::{Failure, FfiResult, entry, guarded, maskdcpt_status};

/// A compiled network (opaque). Internally synchronised: may be used from several threads at
/// once.
pub struct maskdcpt_engine {
    engine: Box<dyn Engine>,
    /// Classes of the model's head (0 without one).
    classes: usize,
}

// The threading contract of the header, checked by the compiler.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<maskdcpt_engine>();
    shareable::<maskdcpt_model>();
};

/// Builds an engine for `model` with `options` (NULL: `maskdcpt_options_default()`). The engine
/// keeps no reference to the model, which may be freed afterwards. On success `*out` receives
/// an engine to free with `maskdcpt_engine_free`.
///
/// # Safety
/// `model` is a live model, `options` NULL or valid (of this header or an earlier one, see
/// `maskdcpt_options`), `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_engine_new(
    model: *const maskdcpt_model,
    options: *const maskdcpt_options,
    out: *mut *mut maskdcpt_engine,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (all blocks): the pointers are valid per the contract.
        let model = unsafe { arg(model, "model") }?;
        let out = Out::new(out, "out")?;
        // SAFETY: NULL or valid (cache folder included) per the contract.
        let options = unsafe { maskdcpt_options::read(options)?.to_core() }?;
        let engine = build_engine(&model.model, &options)?;
        let classes = model.model.head().map_or(0, |h| h.classes());
        unsafe { out.write(Box::into_raw(Box::new(maskdcpt_engine { engine, classes }))) };
        Ok(())
    })
}

/// Frees `*engine` and sets `*engine` to NULL. NULL or `*engine == NULL` do nothing, so calling
/// it twice through the same pointer is safe. The engine's worker threads finish exiting
/// shortly after this returns.
///
/// # Safety
/// `engine` is NULL or points to NULL or to an engine not yet freed, which no other thread is
/// using.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_engine_free(engine: *mut *mut maskdcpt_engine) {
    // SAFETY: per the contract.
    guarded((), || unsafe { free_and_null(engine) })
}

/// Builds now what restoring `width × height` frames needs, so that the first
/// `maskdcpt_restore` of that size does not pay for it: the workspace on the CPU; on the CUDA
/// backend the buffers, tuned products and recorded CUDA graph (kernels are compiled when the
/// engine is built; with local tiling the tiles are built by the first restore). Fails as that
/// restore would: `MASKDCPT_STATUS_INVALID_ARGUMENT` for an empty size,
/// `MASKDCPT_STATUS_OUT_OF_MEMORY` (with a hint) for a run over the memory limit. Optional,
/// and safe to call from several threads or again for the same size.
///
/// # Safety
/// `engine` is a live engine.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_engine_prepare(
    engine: *const maskdcpt_engine,
    width: usize,
    height: usize,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY: the pointer is valid per the contract.
        let engine = unsafe { arg(engine, "engine") }?;
        engine.engine.prepare(width, height)?;
        Ok(())
    })
}

/// Memory a restore of one size needs (`maskdcpt_engine_memory_estimate`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct maskdcpt_memory_estimate {
    /// The weights as the engine holds them (on the device for GPU engines).
    pub weight_bytes: u64,
    /// Activations and scratch of the largest run (a tile's with local tiling): host memory on
    /// the CPU; on the CUDA backend device memory, the buffers its run allocates and cuBLASLt's
    /// workspace (the CUDA context, kernels, graph and page-locked host staging of the planar
    /// input and output, 2 × 3 × H × W floats, come on top).
    pub activation_bytes: u64,
}

/// Writes to `*out` the memory restoring a `width × height` frame needs, from the engine's
/// plan alone (nothing is allocated): on the CPU and CUDA backends what the engine's
/// `memory_limit` is compared with (on TensorRT only the host staging; classification always
/// runs the whole image, whatever the tiling). `MASKDCPT_STATUS_INVALID_ARGUMENT` for an empty
/// size or a side over 2^20 pixels.
///
/// # Safety
/// `engine` is a live engine, `out` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_engine_memory_estimate(
    engine: *const maskdcpt_engine,
    width: usize,
    height: usize,
    out: *mut maskdcpt_memory_estimate,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (both): the pointers are valid per the contract.
        let engine = unsafe { arg(engine, "engine") }?;
        let out = Out::new(out, "out")?;
        let estimate = engine.engine.memory_estimate(width, height)?;
        let estimate =
            maskdcpt_memory_estimate { weight_bytes: estimate.weights, activation_bytes: estimate.activations };
        unsafe { out.write(estimate) };
        Ok(())
    })
}

/// Writes to `*tile_size` the tile edge a restore of a `width × height` frame runs in with
/// local channel-attention means: the engine's `tile_size`, or with `MASKDCPT_TILE_SIZE_AUTO`
/// the tile it picks for that size; 0 when the frame runs whole (no tiling, global means, or an
/// automatic tile size under which the whole frame fits). `MASKDCPT_STATUS_OUT_OF_MEMORY` when
/// not even the smallest automatic tile fits, `MASKDCPT_STATUS_INVALID_ARGUMENT` for an empty
/// size.
///
/// # Safety
/// `engine` is a live engine, `tile_size` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_engine_tile_size(
    engine: *const maskdcpt_engine,
    width: usize,
    height: usize,
    tile_size: *mut u32,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (both): the pointers are valid per the contract.
        let engine = unsafe { arg(engine, "engine") }?;
        let out = Out::new(tile_size, "tile_size")?;
        let tile = engine.engine.local_tiles(width, height)?.map_or(0, |tiles| tiles.tile);
        // Tiles are at most the options' u32 or a side of an image (at most 2^20 pixels).
        unsafe { out.write(u32::try_from(tile).unwrap_or(u32::MAX)) };
        Ok(())
    })
}

/// Checks that `input` and `output` have the same size.
fn same_size(input: &Frame, output: &Frame) -> FfiResult {
    let (i, o) = (input.desc(), output.desc());
    if (i.width, i.height) != (o.width, o.height) {
        return Err(Failure::invalid(format!(
            "input is {}×{} but output is {}×{}: they must be the same size",
            i.width, i.height, o.width, o.height
        )));
    }
    Ok(())
}

/// Restores `input` into `output`, both in host memory, each in any pixel format (see
/// `maskdcpt_image`); they must have the same width and height. `output` is written only on
/// success. Input and output may be the same frame (in place).
///
/// # Safety
/// `engine` is a live engine; `input` and `output` describe readable / writable planes at
/// least `stride × (rows − 1) + row size` bytes long.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_restore(
    engine: *const maskdcpt_engine,
    input: *const maskdcpt_image,
    output: *const maskdcpt_image,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (all blocks): the pointers and planes are valid per the contract. The input
        // slices are dropped after decoding, before the output slices exist, so in-place
        // frames never alias.
        let engine = unsafe { arg(engine, "engine") }?;
        let input = Frame::check(unsafe { arg(input, "input") }?, "input")?;
        let mut output = Frame::check(unsafe { arg(output, "output") }?, "output")?;
        same_size(&input, &output)?;
        let decoded = pixels::decode(input.desc(), &unsafe { input.planes() })?;
        let desc = *output.desc();
        let mut planes = unsafe { output.planes_mut() }?;
        let restored = engine.engine.restore(&decoded.image)?;
        pixels::encode(&desc, &restored, decoded.alpha.as_deref(), &mut planes)?;
        Ok(())
    })
}

/// Restores `input` into `output`, frames in the GPU memory of the engine's device (device,
/// managed or pinned allocations; same width and height, any pixel format; the same frame for
/// in place), in the order of `cuda_stream` (a `cudaStream_t` / `CUstream` of that device;
/// NULL is the legacy default stream). Returns once the work is enqueued: `output` is written
/// when the stream reaches this point, and later work on the stream sees it. Float samples
/// are not checked for NaN or infinity. Needs the CUDA backend: other engines return
/// `MASKDCPT_STATUS_UNSUPPORTED`; planes that are not GPU memory of the engine's device and
/// context (its primary context), or too small for their pixels, and a stream of another
/// context, `MASKDCPT_STATUS_INVALID_ARGUMENT`; a stream capturing a CUDA graph,
/// `MASKDCPT_STATUS_UNSUPPORTED`.
///
/// # Safety
/// `engine` is a live engine; `input` and `output` are valid descriptors whose planes stay
/// allocated until the stream has passed this work; `cuda_stream` is NULL or a live stream.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_restore_device(
    engine: *const maskdcpt_engine,
    input: *const maskdcpt_image,
    output: *const maskdcpt_image,
    cuda_stream: *mut c_void,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (all blocks): the pointers are valid per the contract.
        let engine = unsafe { arg(engine, "engine") }?;
        let input = Frame::check(unsafe { arg(input, "input") }?, "input")?;
        let output = Frame::check(unsafe { arg(output, "output") }?, "output")?;
        same_size(&input, &output)?;
        output.check_disjoint()?;
        unsafe { engine.engine.restore_device(&input.device(), &output.device(), cuda_stream) }?;
        Ok(())
    })
}

/// Classifies the degradations of `input`: writes one probability per class (softmax; names
/// from `maskdcpt_model_class_name`) to `probabilities`, which holds `capacity` floats, and
/// the class count to `*count`. With `probabilities` NULL and `capacity` 0 only `*count` is
/// written (nothing runs). A `capacity` below the class count is
/// `MASKDCPT_STATUS_INVALID_ARGUMENT`; a model without the degradation-classification head,
/// or a TensorRT engine, `MASKDCPT_STATUS_UNSUPPORTED`. CPU and CUDA engines run the network
/// on their device and the head on the CPU.
///
/// # Safety
/// `engine` is a live engine, `input` a valid frame, `probabilities` NULL (with `capacity` 0)
/// or `capacity` writable floats, `count` a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn maskdcpt_classify(
    engine: *const maskdcpt_engine,
    input: *const maskdcpt_image,
    probabilities: *mut f32,
    capacity: usize,
    count: *mut usize,
) -> maskdcpt_status {
    entry(|| {
        // SAFETY (all blocks): the pointers are valid per the contract.
        let engine = unsafe { arg(engine, "engine") }?;
        let input = Frame::check(unsafe { arg(input, "input") }?, "input")?;
        if probabilities.is_null() && capacity > 0 {
            return Err(Failure::null("probabilities"));
        }
        let count = Out::new(count, "count")?;
        if engine.classes == 0 {
            return Err(Failure::unsupported(NO_CLASSIFIER));
        }
        if probabilities.is_null() {
            unsafe { count.write(engine.classes) };
            return Ok(());
        }
        if capacity < engine.classes {
            return Err(Failure::invalid(format!(
                "`probabilities` holds {capacity} floats but the model has {} classes",
                engine.classes
            )));
        }
        let decoded = pixels::decode(input.desc(), &unsafe { input.planes() })?;
        let result = engine.engine.classify(&decoded.image)?;
        let out = unsafe { std::slice::from_raw_parts_mut(probabilities, result.len()) };
        out.copy_from_slice(&result);
        unsafe { count.write(result.len()) };
        Ok(())
    })
}
