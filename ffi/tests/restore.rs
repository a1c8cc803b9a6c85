//! The C ABI end to end: loading, model info, restoring every pixel format with row padding,
//! in place, and one engine shared by 8 threads.

mod common;

use std::ptr;
use std::sync::Barrier;

use common::*;
use maskdcpt::*;

#[test]
fn model_loads_from_file_and_memory_with_the_same_info() {
    let mut from_file = load_model();
    let bytes = std::fs::read(model_path()).unwrap();
    let mut from_memory = ptr::null_mut();
    // SAFETY: valid arguments throughout.
    let status = unsafe { maskdcpt_model_load_memory(bytes.as_ptr(), bytes.len(), ptr::null(), &mut from_memory) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    assert_eq!(last_error(), "");
    let info = |model| {
        let mut info = std::mem::MaybeUninit::uninit();
        assert_eq!(unsafe { maskdcpt_model_get_info(model, info.as_mut_ptr()) }, maskdcpt_status::Ok);
        unsafe { info.assume_init() }
    };
    let a: maskdcpt_model_info = info(from_file);
    assert_eq!(a, info(from_memory));
    assert_eq!((a.family, a.width, a.levels, a.size_multiple), (maskdcpt_family::Maskdcpt, 8, 4, 16));
    assert!(a.param_count > 0 && a.blocks > 0 && !a.has_classifier && a.class_count == 0, "{a:?}");
    let mut engine = new_engine(from_memory, &options(1));
    unsafe {
        maskdcpt_model_free(&mut from_memory);
        maskdcpt_model_free(&mut from_file);
    }
    assert!(from_memory.is_null() && from_file.is_null());
    // The engine outlives its model.
    let mut input = OwnedFrame::from_image(maskdcpt_pixel_format::Rgb8, &pattern(20, 12, 1), 0);
    let mut output = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 20, 12, 0, 0);
    let status = unsafe { maskdcpt_restore(engine, &input.image(), &output.image()) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    assert_eq!(output, reference(&input, OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 20, 12, 0, 0)));
    unsafe { maskdcpt_engine_free(&mut engine) };
    assert!(engine.is_null());
}

#[test]
fn every_format_restores_like_the_core_and_keeps_row_padding() {
    let f = Fixture::new(2);
    let image = pattern(22, 14, 2);
    for (i, &format) in FORMATS.iter().enumerate() {
        let pad = 1 + i;
        let mut input = OwnedFrame::from_image(format, &image, pad);
        let before = input.clone();
        let mut output = OwnedFrame::new(format, 22, 14, pad, 0xee);
        let expected = reference(&input, output.clone());
        // SAFETY: the frames own their planes.
        let status = unsafe { maskdcpt_restore(f.engine, &input.image(), &output.image()) };
        assert_eq!(status, maskdcpt_status::Ok, "{format:?}: {}", last_error());
        assert_eq!(input, before, "{format:?}: the input is only read");
        assert_eq!(output, expected, "{format:?}");
    }
}

#[test]
fn formats_convert_and_alpha_passes_through() {
    let f = Fixture::new(2);
    let image = pattern(16, 10, 3);
    let cases = [
        (maskdcpt_pixel_format::Nv12, maskdcpt_pixel_format::Bgra8),
        (maskdcpt_pixel_format::Rgba8, maskdcpt_pixel_format::Bgra8),
        (maskdcpt_pixel_format::Rgb16, maskdcpt_pixel_format::RgbF32Planar),
        (maskdcpt_pixel_format::Bgr8, maskdcpt_pixel_format::Nv12),
    ];
    for (from, to) in cases {
        let mut input = OwnedFrame::from_image(from, &image, 0);
        let mut output = OwnedFrame::new(to, 16, 10, 0, 0);
        let expected = reference(&input, output.clone());
        // SAFETY: the frames own their planes.
        let status = unsafe { maskdcpt_restore(f.engine, &input.image(), &output.image()) };
        assert_eq!(status, maskdcpt_status::Ok, "{from:?} → {to:?}: {}", last_error());
        assert_eq!(output, expected, "{from:?} → {to:?}");
    }
    // RGBA → BGRA keeps the input's alpha; NV12 → BGRA writes opaque pixels.
    let mut rgba = OwnedFrame::from_image(maskdcpt_pixel_format::Rgba8, &image, 0);
    let mut bgra = OwnedFrame::new(maskdcpt_pixel_format::Bgra8, 16, 10, 0, 0);
    assert_eq!(unsafe { maskdcpt_restore(f.engine, &rgba.image(), &bgra.image()) }, maskdcpt_status::Ok);
    assert!(bgra.planes[0].chunks(4).all(|px| px[3] == 200));
    let mut nv12 = OwnedFrame::from_image(maskdcpt_pixel_format::Nv12, &image, 0);
    assert_eq!(unsafe { maskdcpt_restore(f.engine, &nv12.image(), &bgra.image()) }, maskdcpt_status::Ok);
    assert!(bgra.planes[0].chunks(4).all(|px| px[3] == 255));
}

#[test]
fn in_place_restore_equals_out_of_place() {
    let f = Fixture::new(2);
    for format in [maskdcpt_pixel_format::Bgra8, maskdcpt_pixel_format::Nv12] {
        let mut frame = OwnedFrame::from_image(format, &pattern(18, 8, 4), 3);
        let expected = reference(&frame, frame.clone());
        let image = frame.image();
        // SAFETY: one frame as both input and output is allowed.
        assert_eq!(unsafe { maskdcpt_restore(f.engine, &image, &image) }, maskdcpt_status::Ok, "{}", last_error());
        assert_eq!(frame, expected, "{format:?}");
    }
}

#[test]
fn a_prepared_engine_restores_like_a_cold_one() {
    let f = Fixture::new(2);
    let mut frame = OwnedFrame::from_image(maskdcpt_pixel_format::Rgb8, &pattern(23, 13, 5), 0);
    let expected = reference(&frame, frame.clone());
    let image = frame.image();
    // SAFETY: a live engine and a valid frame.
    unsafe {
        assert_eq!(maskdcpt_engine_prepare(f.engine, 23, 13), maskdcpt_status::Ok, "{}", last_error());
        assert_eq!(maskdcpt_engine_prepare(f.engine, 23, 13), maskdcpt_status::Ok, "{}", last_error());
        assert_eq!(maskdcpt_restore(f.engine, &image, &image), maskdcpt_status::Ok, "{}", last_error());
    }
    assert_eq!(frame, expected);
}

/// The estimate is what the memory limit is compared with: an engine limited to it restores
/// that size, one limited to a byte less refuses.
#[test]
fn the_memory_estimate_is_what_the_limit_checks() {
    let f = Fixture::new(1);
    let mut estimate = maskdcpt_memory_estimate::default();
    // SAFETY: a live engine and a writable estimate.
    let status = unsafe { maskdcpt_engine_memory_estimate(f.engine, 23, 13, &mut estimate) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    assert!(estimate.weight_bytes > 0 && estimate.activation_bytes > 0, "{estimate:?}");
    let total = estimate.weight_bytes + estimate.activation_bytes;
    let mut frame = OwnedFrame::from_image(maskdcpt_pixel_format::Rgb8, &pattern(23, 13, 5), 0);
    let image = frame.image();
    for (limit, want) in [(total, maskdcpt_status::Ok), (total - 1, maskdcpt_status::OutOfMemory)] {
        let mut engine = new_engine(f.model, &maskdcpt_options { memory_limit: limit, ..options(1) });
        // SAFETY: a live engine and a valid frame; the engine is freed once.
        unsafe {
            assert_eq!(maskdcpt_restore(engine, &image, &image), want, "limit {limit}: {}", last_error());
            maskdcpt_engine_free(&mut engine);
        }
    }
}

/// `MASKDCPT_TILE_SIZE_AUTO` runs a frame whole when it fits the memory limit, else in the
/// largest tiles that fit, which `maskdcpt_engine_tile_size` reports and which restore as that
/// fixed tile size does; global means are refused with it, and no budget fits no tile.
#[test]
fn automatic_tiles_fit_the_memory_limit() {
    let f = Fixture::new(1);
    let (w, h) = (200, 120);
    let mut whole = maskdcpt_memory_estimate::default();
    // SAFETY: a live engine and a writable estimate.
    assert_eq!(unsafe { maskdcpt_engine_memory_estimate(f.engine, w, h, &mut whole) }, maskdcpt_status::Ok);
    let local = |tile_size, memory_limit| maskdcpt_options {
        tile_size,
        tile_overlap: 8,
        sca_mode: maskdcpt_sca_mode::Local as u32,
        memory_limit,
        ..options(1)
    };
    let tile_of = |engine, width, height| {
        let mut tile = 77;
        // SAFETY: a live engine and a writable tile size.
        let status = unsafe { maskdcpt_engine_tile_size(engine, width, height, &mut tile) };
        (status, tile)
    };
    let budget = (whole.weight_bytes + whole.activation_bytes) / 2;
    let mut roomy = new_engine(f.model, &local(MASKDCPT_TILE_SIZE_AUTO, 1 << 40));
    let mut auto = new_engine(f.model, &local(MASKDCPT_TILE_SIZE_AUTO, budget));
    assert_eq!(tile_of(roomy, w, h), (maskdcpt_status::Ok, 0));
    assert_eq!(tile_of(f.engine, w, h), (maskdcpt_status::Ok, 0));
    let (status, tile) = tile_of(auto, w, h);
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    assert!(tile > 0 && tile < w as u32, "tile {tile}");
    let mut fixed = new_engine(f.model, &local(tile, 0));
    assert_eq!(tile_of(fixed, w, h), (maskdcpt_status::Ok, tile));
    let mut input = OwnedFrame::from_image(maskdcpt_pixel_format::RgbF32, &pattern(w, h, 9), 0);
    let mut a = OwnedFrame::new(maskdcpt_pixel_format::RgbF32, w, h, 0, 0);
    let mut b = a.clone();
    let mut starved = new_engine(f.model, &local(MASKDCPT_TILE_SIZE_AUTO, 1 << 16));
    // SAFETY: live engines and valid frames; each engine is freed once.
    unsafe {
        assert_eq!(maskdcpt_restore(auto, &input.image(), &a.image()), maskdcpt_status::Ok, "{}", last_error());
        assert_eq!(maskdcpt_restore(fixed, &input.image(), &b.image()), maskdcpt_status::Ok, "{}", last_error());
        assert_eq!(tile_of(starved, w, h).0, maskdcpt_status::OutOfMemory);
        assert!(last_error().contains("smallest automatic tile"), "{}", last_error());
        let global =
            maskdcpt_options { sca_mode: maskdcpt_sca_mode::Global as u32, ..local(MASKDCPT_TILE_SIZE_AUTO, 0) };
        let mut refused = ptr::null_mut();
        assert_eq!(maskdcpt_engine_new(f.model, &global, &mut refused), maskdcpt_status::InvalidArgument);
        assert!(last_error().contains("MASKDCPT_SCA_MODE_LOCAL") && refused.is_null(), "{}", last_error());
        for engine in [&mut roomy, &mut auto, &mut fixed, &mut starved] {
            maskdcpt_engine_free(engine);
        }
    }
    assert_eq!(a, b);
}

/// Engine pointers cross threads in this test only.
#[derive(Clone, Copy)]
struct Shared(*const maskdcpt_engine);
// SAFETY: the engine is documented as internally synchronised.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

#[test]
fn eight_threads_sharing_one_engine_match_a_single_thread() {
    const THREADS: usize = 8;
    let f = Fixture::new(2);
    let inputs: Vec<OwnedFrame> = (0..THREADS)
        .map(|t| OwnedFrame::from_image(maskdcpt_pixel_format::Rgb8, &pattern(24 + t % 3, 16, t), 0))
        .collect();
    let restore = |engine: Shared, input: &OwnedFrame| {
        let mut input = input.clone();
        let mut output = OwnedFrame::new(input.format, input.width, input.height, 0, 0);
        // SAFETY: the frames own their planes; the engine is live.
        let status = unsafe { maskdcpt_restore(engine.0, &input.image(), &output.image()) };
        assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
        output
    };
    let shared = Shared(f.engine);
    let single: Vec<OwnedFrame> = inputs.iter().map(|i| restore(shared, i)).collect();
    let barrier = Barrier::new(THREADS);
    let concurrent: Vec<Vec<OwnedFrame>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (inputs, barrier, restore) = (&inputs, &barrier, &restore);
                s.spawn(move || {
                    barrier.wait();
                    // Each thread restores every image, starting at a different one.
                    (0..THREADS).map(|k| restore(shared, &inputs[(t + k) % THREADS])).collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, outputs) in concurrent.iter().enumerate() {
        for (k, output) in outputs.iter().enumerate() {
            assert_eq!(output, &single[(t + k) % THREADS], "thread {t}, image {k}");
        }
    }
}

#[test]
fn tiled_global_equals_untiled_through_the_options() {
    let mut model = load_model();
    let mut whole = new_engine(model, &options(2));
    let tiled_options = maskdcpt_options { tile_size: 8, sca_mode: maskdcpt_sca_mode::Global as u32, ..options(2) };
    let mut tiled = new_engine(model, &tiled_options);
    let mut input = OwnedFrame::from_image(maskdcpt_pixel_format::RgbF32, &pattern(40, 24, 5), 0);
    let mut a = OwnedFrame::new(maskdcpt_pixel_format::RgbF32, 40, 24, 0, 0);
    let mut b = a.clone();
    unsafe {
        assert_eq!(maskdcpt_restore(whole, &input.image(), &a.image()), maskdcpt_status::Ok);
        assert_eq!(maskdcpt_restore(tiled, &input.image(), &b.image()), maskdcpt_status::Ok);
        maskdcpt_engine_free(&mut whole);
        maskdcpt_engine_free(&mut tiled);
        maskdcpt_model_free(&mut model);
    }
    assert_eq!(a, b);
}

#[test]
fn the_default_model_loads_and_restores() {
    let mut model = ptr::null_mut();
    // SAFETY: valid arguments throughout.
    let status = unsafe { maskdcpt_model_load_default(&mut model) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    let mut info = std::mem::MaybeUninit::uninit();
    assert_eq!(unsafe { maskdcpt_model_get_info(model, info.as_mut_ptr()) }, maskdcpt_status::Ok);
    let info: maskdcpt_model_info = unsafe { info.assume_init() };
    assert_eq!(info.family, maskdcpt_family::Maskdcpt);
    let mut engine = new_engine(model, &options(1));
    let mut input = OwnedFrame::from_image(maskdcpt_pixel_format::Rgb8, &pattern(20, 12, 3), 0);
    let mut output = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 20, 12, 0, 0);
    let status = unsafe { maskdcpt_restore(engine, &input.image(), &output.image()) };
    assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
    assert_eq!(unsafe { maskdcpt_model_load_default(ptr::null_mut()) }, maskdcpt_status::NullPointer);

    // Its classification head: names, the count query, a short buffer, the probabilities.
    assert!(info.has_classifier && info.class_count == 19, "{info:?}");
    let mut name = ptr::null();
    assert_eq!(unsafe { maskdcpt_model_class_name(model, 12, &mut name) }, maskdcpt_status::Ok);
    assert_eq!(unsafe { std::ffi::CStr::from_ptr(name) }.to_str().unwrap(), "low_light");
    assert_eq!(unsafe { maskdcpt_model_class_name(model, 19, &mut name) }, maskdcpt_status::InvalidArgument);
    let mut count = 0;
    let status = unsafe { maskdcpt_classify(engine, &input.image(), ptr::null_mut(), 0, &mut count) };
    assert_eq!((status, count), (maskdcpt_status::Ok, 19));
    let mut probabilities = [0.0f32; 19];
    let status = unsafe { maskdcpt_classify(engine, &input.image(), probabilities.as_mut_ptr(), 4, &mut count) };
    assert_eq!(status, maskdcpt_status::InvalidArgument);
    assert!(last_error().contains("holds 4 floats"), "{}", last_error());
    count = 0;
    let status = unsafe { maskdcpt_classify(engine, &input.image(), probabilities.as_mut_ptr(), 19, &mut count) };
    assert_eq!((status, count), (maskdcpt_status::Ok, 19), "{}", last_error());
    assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    unsafe {
        maskdcpt_engine_free(&mut engine);
        maskdcpt_model_free(&mut model);
    }
}

/// Restormer and SwinIR checkpoints through the C ABI: their info, a restore equal to the
/// core engine's, and the CUDA backend's refusal with a message naming why.
#[test]
fn transformer_checkpoints_load_and_restore_on_the_cpu() {
    use maskdcpt_core::backend::{EngineOptions, build_engine};
    use maskdcpt_core::model::Model;
    use maskdcpt_core::weights::LoadOptions;

    let checkpoints = [
        // Blocks: encoders 1 + 1 + 1, latent 2, decoders 1 + 1 + 1, refinement 1.
        ("restormer/restormer_w8.pth", (maskdcpt_family::Restormer, 8, 3, 9, 8, 262_301)),
        // Blocks: groups of 1, 2, 1, 1, 2, 1; no down-sampling; windows of 8.
        ("swinir/swinir_w12.pth", (maskdcpt_family::Swinir, 12, 0, 8, 8, 20_139)),
    ];
    for (file, want) in checkpoints {
        let path = model_path().with_file_name(file);
        let mut model = ptr::null_mut();
        // SAFETY (all blocks): valid arguments throughout.
        let status = unsafe { maskdcpt_model_load_file(c_path(&path).as_ptr(), ptr::null(), &mut model) };
        assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
        let mut info = std::mem::MaybeUninit::uninit();
        assert_eq!(unsafe { maskdcpt_model_get_info(model, info.as_mut_ptr()) }, maskdcpt_status::Ok);
        let info = unsafe { info.assume_init() };
        let summary = (info.family, info.width, info.levels, info.blocks, info.size_multiple, info.param_count);
        assert_eq!(summary, want, "{file}");

        let image = pattern(19, 13, 4);
        let mut input = OwnedFrame::from_image(maskdcpt_pixel_format::RgbF32, &image, 0);
        let mut output = OwnedFrame::new(maskdcpt_pixel_format::RgbF32, 19, 13, 0, 0);
        let mut engine = new_engine(model, &options(2));
        let status = unsafe { maskdcpt_restore(engine, &input.image(), &output.image()) };
        assert_eq!(status, maskdcpt_status::Ok, "{}", last_error());
        let core = Model::load(&path, &LoadOptions::default()).unwrap();
        let want = build_engine(&core, &EngineOptions::default()).unwrap().restore(&image).unwrap();
        assert_eq!(output, OwnedFrame::from_image(maskdcpt_pixel_format::RgbF32, &want, 0), "{file}");

        let mut cuda = options(1);
        cuda.backend = maskdcpt_backend::Cuda as u32;
        let mut refused = ptr::null_mut();
        let status = unsafe { maskdcpt_engine_new(model, &cuda, &mut refused) };
        assert_eq!(status, maskdcpt_status::Unsupported, "{}", last_error());
        assert!(refused.is_null() && last_error().contains("NAFNet networks only"), "{}", last_error());
        unsafe {
            maskdcpt_engine_free(&mut engine);
            maskdcpt_model_free(&mut model);
        }
    }
}
