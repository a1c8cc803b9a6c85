//! Every bad input gives its status and a message naming the problem, writes no output and
//! never crashes.

mod common;

use std::ffi::CStr;
use std::ptr;

use common::*;
use maskdcpt::*;

/// Asserts `status` is `expected` and the last error mentions `needle`.
#[track_caller]
fn fails(status: maskdcpt_status, expected: maskdcpt_status, needle: &str) {
    let message = last_error();
    assert_eq!(status, expected, "{message}");
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[test]
fn null_pointers_are_named() {
    let f = Fixture::new(1);
    let path = c_path(&model_path());
    let mut model = ptr::null_mut();
    let mut engine = ptr::null_mut();
    let mut input = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 4, 4, 0, 0);
    let image = input.image();
    let null = maskdcpt_status::NullPointer;
    // SAFETY: NULL pointers are what is being tested; the others are valid.
    unsafe {
        fails(maskdcpt_model_load_file(ptr::null(), ptr::null(), &mut model), null, "`path`");
        fails(maskdcpt_model_load_file(path.as_ptr(), ptr::null(), ptr::null_mut()), null, "`out`");
        fails(maskdcpt_model_load_memory(ptr::null(), 10, ptr::null(), &mut model), null, "`data`");
        fails(maskdcpt_model_get_info(ptr::null(), ptr::null_mut()), null, "`model`");
        fails(maskdcpt_model_get_info(f.model, ptr::null_mut()), null, "`out`");
        fails(maskdcpt_model_class_name(ptr::null(), 0, ptr::null_mut()), null, "`model`");
        fails(maskdcpt_engine_new(ptr::null(), ptr::null(), &mut engine), null, "`model`");
        fails(maskdcpt_engine_new(f.model, ptr::null(), ptr::null_mut()), null, "`out`");
        fails(maskdcpt_engine_prepare(ptr::null(), 4, 4), null, "`engine`");
        let mut estimate = maskdcpt_memory_estimate::default();
        fails(maskdcpt_engine_memory_estimate(ptr::null(), 4, 4, &mut estimate), null, "`engine`");
        fails(maskdcpt_engine_memory_estimate(f.engine, 4, 4, ptr::null_mut()), null, "`out`");
        fails(maskdcpt_engine_tile_size(ptr::null(), 4, 4, &mut 0), null, "`engine`");
        fails(maskdcpt_engine_tile_size(f.engine, 4, 4, ptr::null_mut()), null, "`tile_size`");
        fails(maskdcpt_restore(ptr::null(), &image, &image), null, "`engine`");
        fails(maskdcpt_restore(f.engine, ptr::null(), &image), null, "`input`");
        fails(maskdcpt_restore(f.engine, &image, ptr::null()), null, "`output`");
        let no_plane = maskdcpt_image { planes: [ptr::null_mut(); 3], ..image };
        fails(maskdcpt_restore(f.engine, &no_plane, &image), null, "`input.planes[0]`");
        fails(maskdcpt_restore_device(f.engine, ptr::null(), &image, ptr::null_mut()), null, "`input`");
        fails(maskdcpt_classify(f.engine, &image, ptr::null_mut(), 4, &mut 0), null, "`probabilities`");
        fails(maskdcpt_classify(f.engine, &image, ptr::null_mut(), 0, ptr::null_mut()), null, "`count`");
        // Frees of NULL are no-ops.
        maskdcpt_model_free(ptr::null_mut());
        maskdcpt_engine_free(ptr::null_mut());
    }
    assert!(model.is_null() && engine.is_null(), "outputs are written only on success");
}

#[test]
fn bad_sizes_strides_and_formats_are_invalid_arguments() {
    let f = Fixture::new(1);
    let mut frame = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 4, 4, 0, 7);
    let good = frame.image();
    let invalid = maskdcpt_status::InvalidArgument;
    let cases = [
        (maskdcpt_image { width: 0, ..good }, "0×4"),
        (maskdcpt_image { height: 0, ..good }, "4×0"),
        (maskdcpt_image { width: usize::MAX, ..good }, "at most 1048576 pixels"),
        (maskdcpt_image { width: 1 << 31, height: 1 << 31, strides: [3 << 31, 0, 0], ..good }, "at most 1048576"),
        (maskdcpt_image { height: 1 << 20, strides: [usize::MAX / 4, 0, 0], ..good }, "too large"),
        (maskdcpt_image { strides: [11, 0, 0], ..good }, "smaller than a row"),
        (maskdcpt_image { format: 99, ..good }, "not a maskdcpt_pixel_format"),
        (maskdcpt_image { yuv_matrix: 7, ..good }, "not a maskdcpt_yuv_matrix"),
        (maskdcpt_image { format: maskdcpt_pixel_format::Nv12 as u32, width: 3, ..good }, "even"),
    ];
    for (bad, needle) in cases {
        // SAFETY: descriptors are checked before any plane is read.
        unsafe {
            fails(maskdcpt_restore(f.engine, &bad, &good), invalid, needle);
            fails(maskdcpt_restore(f.engine, &good, &bad), invalid, needle);
        }
    }
    let mut small = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 4, 2, 0, 7);
    let mut planar = OwnedFrame::new(maskdcpt_pixel_format::RgbF32Planar, 4, 4, 0, 7);
    let mut overlapping = planar.image();
    overlapping.planes[2] = overlapping.planes[1];
    // SAFETY: valid frames (the overlap is refused before any write).
    unsafe {
        fails(maskdcpt_restore(f.engine, &good, &small.image()), invalid, "same size");
        fails(maskdcpt_restore(f.engine, &good, &overlapping), invalid, "overlaps");
    }
    assert!(frame.planes[0].iter().all(|&b| b == 7), "no output written on failure");
    assert!(small.planes[0].iter().all(|&b| b == 7) && planar.planes.iter().flatten().all(|&b| b == 7));
}

#[test]
fn bad_models_and_files_are_reported() {
    let mut model = ptr::null_mut();
    let missing = c_path(std::path::Path::new("/nonexistent/model.pth"));
    let mut corrupt = std::fs::read(model_path()).unwrap();
    corrupt.truncate(corrupt.len() / 2);
    let garbage = b"this is not a checkpoint at all";
    let bad_key = c"no_such_key";
    let path = c_path(&model_path());
    // SAFETY: valid pointers throughout.
    unsafe {
        fails(maskdcpt_model_load_file(missing.as_ptr(), ptr::null(), &mut model), maskdcpt_status::Io, "nonexistent");
        let status = maskdcpt_model_load_memory(corrupt.as_ptr(), corrupt.len(), ptr::null(), &mut model);
        fails(status, maskdcpt_status::BadModel, "corrupt");
        let status = maskdcpt_model_load_memory(garbage.as_ptr(), garbage.len(), ptr::null(), &mut model);
        fails(status, maskdcpt_status::BadModel, "");
        let status = maskdcpt_model_load_memory(garbage.as_ptr(), 0, ptr::null(), &mut model);
        fails(status, maskdcpt_status::InvalidArgument, "empty");
        let status = maskdcpt_model_load_file(path.as_ptr(), bad_key.as_ptr(), &mut model);
        fails(status, maskdcpt_status::BadModel, "no_such_key");
    }
    assert!(model.is_null());
    assert!(!last_error().is_empty());
}

#[test]
fn options_from_another_header_or_for_missing_backends_are_refused() {
    let f = Fixture::new(1);
    let mut engine = ptr::null_mut();
    let cases = [
        (maskdcpt_options { struct_size: 8, ..options(1) }, maskdcpt_status::AbiMismatch, "struct_size"),
        (
            maskdcpt_options { backend: maskdcpt_backend::Cuda as u32, ..options(1) },
            maskdcpt_status::Unsupported,
            "CUDA",
        ),
        (
            maskdcpt_options { backend: maskdcpt_backend::Tensorrt as u32, ..options(1) },
            maskdcpt_status::Unsupported,
            "TensorRT",
        ),
        (maskdcpt_options { backend: 42, ..options(1) }, maskdcpt_status::InvalidArgument, "maskdcpt_backend"),
        (
            maskdcpt_options { precision: maskdcpt_precision::Fp16 as u32, ..options(1) },
            maskdcpt_status::Unsupported,
            "fp16",
        ),
        (maskdcpt_options { precision: 9, ..options(1) }, maskdcpt_status::InvalidArgument, "maskdcpt_precision"),
        (maskdcpt_options { tile_size: 8, sca_mode: 3, ..options(1) }, maskdcpt_status::InvalidArgument, "sca_mode"),
        (maskdcpt_options { tlc_train_size: 8, ..options(1) }, maskdcpt_status::InvalidArgument, "TLC training crop"),
        (
            maskdcpt_options { tlc_train_size: 256, backend: maskdcpt_backend::Tensorrt as u32, ..options(1) },
            maskdcpt_status::Unsupported,
            "not TensorRT",
        ),
    ];
    for (options, status, needle) in cases {
        // SAFETY: valid pointers.
        fails(unsafe { maskdcpt_engine_new(f.model, &options, &mut engine) }, status, needle);
    }
    assert!(engine.is_null());
}

#[test]
fn memory_limits_device_memory_and_classification_report_their_status() {
    let f = Fixture::new(1);
    let mut tiny = new_engine(f.model, &maskdcpt_options { memory_limit: 1024, ..options(1) });
    let mut input = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 8, 8, 0, 9);
    let mut output = OwnedFrame::new(maskdcpt_pixel_format::Rgb8, 8, 8, 0, 1);
    let (image, out) = (input.image(), output.image());
    let mut probabilities = [0.5f32; 4];
    let mut count = 77;
    let mut name = ptr::null();
    // SAFETY: valid pointers throughout.
    unsafe {
        fails(maskdcpt_restore(tiny, &image, &out), maskdcpt_status::OutOfMemory, "not enough memory");
        fails(maskdcpt_engine_prepare(tiny, 8, 8), maskdcpt_status::OutOfMemory, "not enough memory");
        fails(maskdcpt_engine_prepare(f.engine, 0, 8), maskdcpt_status::InvalidArgument, "0×8");
        let mut estimate = maskdcpt_memory_estimate::default();
        let status = maskdcpt_engine_memory_estimate(f.engine, 8, 0, &mut estimate);
        fails(status, maskdcpt_status::InvalidArgument, "8×0");
        let status = maskdcpt_engine_memory_estimate(f.engine, usize::MAX, 8, &mut estimate);
        fails(status, maskdcpt_status::InvalidArgument, "at most 1048576 pixels");
        fails(maskdcpt_engine_tile_size(f.engine, 0, 8, &mut 0), maskdcpt_status::InvalidArgument, "0×8");
        fails(maskdcpt_restore_device(f.engine, &image, &out, ptr::null_mut()), maskdcpt_status::Unsupported, "CUDA");
        let status = maskdcpt_classify(f.engine, &image, probabilities.as_mut_ptr(), 4, &mut count);
        fails(status, maskdcpt_status::Unsupported, "classification head");
        fails(maskdcpt_model_class_name(f.model, 0, &mut name), maskdcpt_status::Unsupported, "classification head");
        maskdcpt_engine_free(&mut tiny);
    }
    assert!(output.planes[0].iter().all(|&b| b == 1));
    assert_eq!((probabilities, count, name), ([0.5; 4], 77, ptr::null()));
}

#[test]
fn double_free_through_the_nulling_helpers_is_harmless() {
    let mut model = load_model();
    let mut engine = new_engine(model, &options(1));
    // SAFETY: the helpers null the pointer, so the second calls see NULL.
    unsafe {
        maskdcpt_engine_free(&mut engine);
        maskdcpt_engine_free(&mut engine);
        maskdcpt_model_free(&mut model);
        maskdcpt_model_free(&mut model);
    }
    assert!(model.is_null() && engine.is_null());
}

#[test]
fn statuses_have_descriptions_and_success_clears_the_last_error() {
    let text = |s: u32| unsafe { CStr::from_ptr(maskdcpt_status_string(s)) }.to_str().unwrap().to_owned();
    assert_eq!(text(0), "success");
    assert_eq!(text(maskdcpt_status::AbiMismatch as u32), "header and library versions differ");
    assert_eq!(text(1000), "unknown status");
    // SAFETY: a NULL model is refused.
    unsafe { maskdcpt_model_get_info(ptr::null(), ptr::null_mut()) };
    assert!(!last_error().is_empty());
    let mut model = load_model();
    assert_eq!(last_error(), "");
    // The message is per thread.
    unsafe { maskdcpt_model_get_info(ptr::null(), ptr::null_mut()) };
    std::thread::spawn(|| assert_eq!(last_error(), "")).join().unwrap();
    unsafe { maskdcpt_model_free(&mut model) };
}
