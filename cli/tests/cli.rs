//! End-to-end tests of the `maskdcpt` binary on a tiny random model written by the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
use maskdcpt_core::backend::{AttentionPool, EngineOptions, ScaMode, TileSize, Tiling, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::Model;
use maskdcpt_core::spec::{Family, ModelSpec};
use maskdcpt_core::weights::LoadOptions;
use npyz::WriterBuilder;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use tempfile::TempDir;

/// Tiny deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately N(0, 1): sum of 12 uniforms minus 6.
    fn normal(&mut self) -> f32 {
        (0..12).map(|_| self.uniform()).sum::<f32>() - 6.0
    }
}

fn tiny_spec() -> ModelSpec {
    ModelSpec {
        family: Family::MaskDcpt,
        width: 4,
        enc_blocks: vec![1, 1, 1, 1],
        middle_blocks: 1,
        dec_blocks: vec![1, 1, 1, 1],
    }
}

/// Writes the tiny model as f32 safetensors: LayerNorm weights 1, everything else N(0, 0.1).
fn write_model(dir: &Path) -> PathBuf {
    let mut rng = Lcg(42);
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = tiny_spec()
        .expected_tensors()
        .into_iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            let layer_norm = key.contains(".norm") && key.ends_with(".weight");
            let values: Vec<f32> = (0..n).map(|_| if layer_norm { 1.0 } else { 0.1 * rng.normal() }).collect();
            (key, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = tensors.iter().map(|(k, s, b)| (k.as_str(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()));
    let path = dir.join("tiny.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn maskdcpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_maskdcpt")).args(args).output().expect("the binary runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_ok(out: &Output) {
    assert!(out.status.success(), "exit {:?}, stderr: {}", out.status, stderr(out));
}

/// Asserts a failed run with exit code 1 and exactly one `maskdcpt: error:` line containing
/// every one of `needles`.
fn assert_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line, got: {err}");
    assert!(err.starts_with("maskdcpt: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

/// Files in `dir`, sorted (to check that nothing, not even a temporary file, was left).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Interleaved RGB test pattern in [0, 1].
fn pattern(width: usize, height: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..width * height * 3).map(|_| rng.uniform()).collect()
}

fn write_npy(path: &Path, shape: &[u64], data: &[f32]) {
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::<f32>::new().default_dtype().shape(shape).writer(&mut buf).begin_nd().unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    std::fs::write(path, buf).unwrap();
}

fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// The engine's raw output for `data`, computed with the core API directly.
fn core_restore(model: &Path, width: usize, height: usize, data: Vec<f32>) -> Vec<f32> {
    core_restore_with(model, &EngineOptions::default(), width, height, data)
}

/// [`core_restore`] with engine `options`.
fn core_restore_with(model: &Path, options: &EngineOptions, width: usize, height: usize, data: Vec<f32>) -> Vec<f32> {
    let model = Model::load(model, &LoadOptions::default()).unwrap();
    let engine = build_engine(&model, options).unwrap();
    engine.restore(&Image::new(width, height, data).unwrap()).unwrap().into_data()
}

fn quantize8(v: &[f32]) -> Vec<u8> {
    v.iter().map(|x| (x.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

fn quantize16(v: &[f32]) -> Vec<u16> {
    v.iter().map(|x| (x.clamp(0.0, 1.0) * 65535.0).round() as u16).collect()
}

fn rgb8(width: usize, height: usize, seed: u64) -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_raw(width as u32, height as u32, quantize8(&pattern(width, height, seed))).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn info_prints_the_architecture_as_text_and_json() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let spec = tiny_spec();

    let out = maskdcpt(&["info", s(&model)]);
    assert_ok(&out);
    let text = stdout(&out);
    for line in [
        "format:         safetensors",
        "checkpoint key: none",
        "family:         maskdcpt",
        "width:          4",
        "encoder blocks: 1, 1, 1, 1",
        "middle blocks:  1",
        "decoder blocks: 1, 1, 1, 1",
        "dtype:          f32",
        "size multiple:  16",
        "padding:        reflect",
    ] {
        assert!(text.contains(line), "`{line}` not in:\n{text}");
    }
    let params = spec.param_count();
    assert!(params > 1000, "the tiny model should still show a separator");
    let grouped = format!("{},{:03}", params / 1000, params % 1000);
    assert!(text.contains(&format!("parameters:     {grouped}\n")), "{text}");
    assert!(text.contains(&format!("tensors:        {}\n", spec.expected_tensors().len())), "{text}");

    // `-m MODEL`, as the other commands take it, is the same; both at once are refused.
    let out = maskdcpt(&["info", "-m", s(&model)]);
    assert_ok(&out);
    assert_eq!(stdout(&out), text);
    let out = maskdcpt(&["info", s(&model), "--model", s(&model)]);
    assert!(!out.status.success() && stderr(&out).contains("cannot be used with"), "{}", stderr(&out));

    let out = maskdcpt(&["info", s(&model), "--json"]);
    assert_ok(&out);
    assert_eq!(stdout(&out).lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["family"], "maskdcpt");
    assert_eq!(v["width"], 4);
    assert_eq!(v["enc_blocks"], serde_json::json!([1, 1, 1, 1]));
    assert_eq!(v["middle_blocks"], 1);
    assert_eq!(v["dec_blocks"], serde_json::json!([1, 1, 1, 1]));
    assert_eq!(v["parameters"], params);
    assert_eq!(v["tensors"], spec.expected_tensors().len());
    assert_eq!(v["dtype"], "f32");
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["param_key"], serde_json::Value::Null);
    assert_eq!(v["size_multiple"], 16);
    assert_eq!(v["padding"], "reflect");
    assert_eq!((&v["classes"], &v["head_features"]), (&serde_json::Value::Null, &serde_json::Value::Null));
    assert_eq!(v["head_spectrum"], serde_json::Value::Null);
    assert!(text.contains("classifier:     none\n"), "{text}");

    // The embedded default model has a 19-class head over the decoder's features and the
    // image's power spectrum.
    let out = maskdcpt(&["info"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("classifier:     19 classes (noise, real_noise,"), "{}", stdout(&out));
    let over = "downsample_noise_blur_jpeg), over the decoder features and the image's power spectrum\n";
    assert!(stdout(&out).contains(over), "{}", stdout(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&maskdcpt(&["info", "--json"]))).unwrap();
    assert_eq!(v["classes"].as_array().map(Vec::len), Some(19));
    assert_eq!(v["head_features"], "decoder");
    assert_eq!(v["head_spectrum"], true);
}

#[test]
fn convert_to_f16_keeps_the_model_close() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let half = dir.path().join("half.safetensors");
    assert_ok(&maskdcpt(&["convert", s(&model), "-o", s(&half), "--dtype", "f16"]));

    let out = maskdcpt(&["info", s(&half), "--json"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["dtype"], "f16");
    assert_eq!(v["parameters"], tiny_spec().param_count());

    let (w, h) = (20, 17);
    let input = dir.path().join("in.npy");
    write_npy(&input, &[h, w, 3], &pattern(w as usize, h as usize, 7));
    let (out32, out16) = (dir.path().join("o32.npy"), dir.path().join("o16.npy"));
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&out32)]));
    assert_ok(&maskdcpt(&["restore", "-m", s(&half), "-i", s(&input), "-o", s(&out16)]));
    let diff = max_diff(&read_npy(&out32).1, &read_npy(&out16).1);
    assert!(diff < 1e-2, "f16 model differs by {diff}");

    // f32 → f32 is lossless.
    let again = dir.path().join("again.safetensors");
    assert_ok(&maskdcpt(&["convert", s(&model), "-o", s(&again)]));
    let out_again = dir.path().join("again.npy");
    assert_ok(&maskdcpt(&["restore", "-m", s(&again), "-i", s(&input), "-o", s(&out_again)]));
    assert_eq!(read_npy(&out32).1, read_npy(&out_again).1);
    // The same input converts to the same bytes.
    let twice = dir.path().join("twice.safetensors");
    assert_ok(&maskdcpt(&["convert", s(&model), "-o", s(&twice)]));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&twice).unwrap());
}

/// `convert` keeps the input's metadata and writes what `--metadata` adds, checked first: a
/// SwinIR's heads, which its weights do not say.
#[test]
fn convert_writes_and_keeps_metadata() {
    let dir = TempDir::new().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/swinir/swinir_w12.pth");
    let heads = |path: &Path| {
        let out = maskdcpt(&["info", "--json", s(path)]);
        assert_ok(&out);
        let info: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        (info["heads"].clone(), info["window"].as_u64(), info["assumed"].clone())
    };
    let defaults = serde_json::json!(["heads", "window"]);
    assert_eq!(heads(&model), (serde_json::json!([6, 6, 6, 6, 6, 6]), Some(8), defaults));
    let (three, again) = (dir.path().join("three.safetensors"), dir.path().join("again.safetensors"));
    let set = ["--metadata", "swinir.num_heads=3", "--metadata", "swinir.window_size=4"];
    assert_ok(&maskdcpt(&[&["convert", s(&model), "-o", s(&three)][..], &set[..]].concat()));
    assert_eq!(heads(&three), (serde_json::json!([3, 3, 3, 3, 3, 3]), Some(4), serde_json::json!([])));
    assert_ok(&maskdcpt(&["convert", s(&three), "-o", s(&again)]));
    assert_eq!(heads(&again), heads(&three));
    let bad = dir.path().join("bad.safetensors");
    let convert = ["convert", s(&model), "-o", s(&bad), "--metadata"];
    assert_error(&maskdcpt(&[&convert[..], &["swinir.num_heads=5"]].concat()), &["5 heads", "do not split the 12"]);
    assert_error(&maskdcpt(&[&convert[..], &["swinir.num_heads"]].concat()), &["KEY=VALUE"]);
    assert!(!bad.exists());
}

#[test]
fn convert_refuses_to_overwrite_its_input_and_other_extensions() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let before = std::fs::read(&model).unwrap();
    assert_error(&maskdcpt(&["convert", s(&model), "-o", s(&model)]), &["refusing to overwrite"]);
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let pth = dir.path().join("out.pth");
    assert_error(&maskdcpt(&["convert", s(&model), "-o", s(&pth)]), &["out.pth", ".safetensors"]);
    assert!(!pth.exists());
}

#[test]
fn npy_round_trip_equals_the_core_engine_exactly() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (23, 18);
    // Values outside [0, 1] must pass through unclamped, and so must the output.
    let data: Vec<f32> = pattern(w, h, 3).iter().map(|v| 1.4 * v - 0.2).collect();
    let (input, output) = (dir.path().join("in.npy"), dir.path().join("out.npy"));
    write_npy(&input, &[h as u64, w as u64, 3], &data);
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
    let (shape, got) = read_npy(&output);
    assert_eq!(shape, [h as u64, w as u64, 3]);
    assert_eq!(got, core_restore(&model, w, h, data));
}

/// `--tlc [TRAIN]` is the core engine with TLC attention (256 when no crop is given), which
/// changes the result where the windows are smaller than the maps; it is refused below the
/// network's size multiple. `--tlc-sampled [TRAIN]` (MaskDCPT's NAFNet class) is the core
/// engine with sampled windows, differs from `--tlc`, excludes it, and is refused off the CPU
/// and by the ONNX export.
#[test]
fn tlc_attention_equals_the_core_engine_with_windows() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (70, 41);
    let data = pattern(w, h, 5);
    let (input, output) = (dir.path().join("in.npy"), dir.path().join("out.npy"));
    write_npy(&input, &[h as u64, w as u64, 3], &data);
    let base = ["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)];
    let restore = |extra: &[&str]| {
        assert_ok(&maskdcpt(&[&base[..], extra].concat()));
        read_npy(&output).1
    };
    let tlc = |train| EngineOptions {
        attention_pool: AttentionPool::Tlc { train_height: train, train_width: train },
        ..Default::default()
    };
    let windowed = restore(&["--tlc", "16"]);
    assert_eq!(windowed, core_restore_with(&model, &tlc(16), w, h, data.clone()));
    let moved = max_diff(&windowed, &core_restore(&model, w, h, data.clone()));
    assert!(moved > 1e-6, "windows of 24 on 80x48 maps moved the result by {moved}");
    // The default crop (256: windows of 384) covers this image: the global result.
    assert_eq!(restore(&["--tlc"]), core_restore_with(&model, &tlc(256), w, h, data.clone()));
    assert_eq!(restore(&["--tlc"]), core_restore(&model, w, h, data.clone()));
    std::fs::remove_file(&output).unwrap();
    let sampled = restore(&["--tlc-sampled", "16"]);
    let options = EngineOptions {
        attention_pool: AttentionPool::TlcSampled { train_height: 16, train_width: 16 },
        ..Default::default()
    };
    assert_eq!(sampled, core_restore_with(&model, &options, w, h, data));
    assert!(max_diff(&sampled, &windowed) > 1e-6, "sampled windows gave exact TLC's result");
    std::fs::remove_file(&output).unwrap();
    assert_error(&maskdcpt(&[&base[..], &["--tlc", "8"]].concat()), &["TLC", "8x8", "size multiple 16"]);
    assert_eq!(maskdcpt(&[&base[..], &["--tlc", "0"]].concat()).status.code(), Some(2));
    assert_eq!(maskdcpt(&[&base[..], &["--tlc", "--tlc-sampled"]].concat()).status.code(), Some(2));
    let on_gpu = maskdcpt(&[&base[..], &["--tlc-sampled", "--backend", "cuda"]].concat());
    assert_error(&on_gpu, &["sampled TLC", "CPU engine only"]);
    assert!(!output.exists());
    let onnx = dir.path().join("m.onnx");
    let export = ["export-onnx", "-m", s(&model), "-o", s(&onnx), "--height", "48", "--width", "80"];
    assert_error(&maskdcpt(&[&export[..], &["--tlc-sampled"]].concat()), &["sampled TLC", "ONNX"]);
    assert!(!onnx.exists());
}

#[test]
fn png_8_bit_is_restored_to_8_bit_with_the_documented_rounding() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (21, 13);
    let img = rgb8(w, h, 5);
    let (input, output) = (dir.path().join("in.png"), dir.path().join("out.png"));
    img.save(&input).unwrap();
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
    let out = image::open(&output).unwrap();
    assert!(matches!(out, DynamicImage::ImageRgb8(_)), "{:?}", out.color());
    let data = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    assert_eq!(out.into_rgb8().into_raw(), quantize8(&core_restore(&model, w, h, data)));
}

#[test]
fn png_16_bit_stays_16_bit_in_png_and_tiff() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (19, 16);
    let raw = quantize16(&pattern(w, h, 9));
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_raw(w as u32, h as u32, raw.clone()).unwrap();
    let input = dir.path().join("in16.png");
    img.save(&input).unwrap();
    let expected = quantize16(&core_restore(&model, w, h, raw.iter().map(|&v| f32::from(v) / 65535.0).collect()));
    for name in ["out16.png", "out16.tif"] {
        let output = dir.path().join(name);
        assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
        let out = image::open(&output).unwrap();
        assert!(matches!(out, DynamicImage::ImageRgb16(_)), "{name}: {:?}", out.color());
        assert_eq!(out.into_rgb16().into_raw(), expected, "{name}");
    }
    // JPEG cannot hold 16 bits: the output is 8-bit.
    let jpg = dir.path().join("out16.jpg");
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&jpg)]));
    assert!(matches!(image::open(&jpg).unwrap(), DynamicImage::ImageRgb8(_)));
}

#[test]
fn tiff_ppm_and_webp_8_bit_round_trip() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (17, 20);
    let img = rgb8(w, h, 11);
    let data: Vec<f32> = img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect();
    let expected = quantize8(&core_restore(&model, w, h, data));
    for ext in ["tiff", "ppm", "webp"] {
        let (input, output) = (dir.path().join(format!("in.{ext}")), dir.path().join(format!("out.{ext}")));
        img.save(&input).unwrap();
        assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
        let out = image::open(&output).unwrap();
        assert!(matches!(out, DynamicImage::ImageRgb8(_)), "{ext}: {:?}", out.color());
        assert_eq!(out.into_rgb8().into_raw(), expected, "{ext}");
        assert!(ext != "ppm" || std::fs::read(&output).unwrap().starts_with(b"P6\n"), "PPM output is binary P6");
    }
}

#[test]
fn jpeg_in_and_out() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (input, output) = (dir.path().join("in.jpg"), dir.path().join("out.jpeg"));
    rgb8(30, 22, 13).save(&input).unwrap();
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
    let out = image::open(&output).unwrap();
    assert!(matches!(out, DynamicImage::ImageRgb8(_)));
    assert_eq!((out.width(), out.height()), (30, 22));
}

#[test]
fn gray_becomes_rgb_and_alpha_is_dropped_with_a_warning() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let gray: ImageBuffer<Luma<u8>, Vec<u8>> = ImageBuffer::from_fn(12, 9, |x, y| Luma([(x * 20 + y) as u8]));
    let input = dir.path().join("gray.png");
    gray.save(&input).unwrap();
    let output = dir.path().join("gray_out.png");
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]);
    assert_ok(&out);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    assert!(matches!(image::open(&output).unwrap(), DynamicImage::ImageRgb8(_)));

    let rgba: ImageBuffer<Rgba<u8>, Vec<u8>> =
        ImageBuffer::from_fn(12, 9, |x, y| Rgba([x as u8 * 9, y as u8 * 9, 7, 128]));
    let input = dir.path().join("rgba.png");
    rgba.save(&input).unwrap();
    let output = dir.path().join("rgba_out.png");
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.starts_with("maskdcpt: warning: ") && err.contains("rgba.png") && err.contains("alpha"), "{err}");
    assert!(matches!(image::open(&output).unwrap(), DynamicImage::ImageRgb8(_)));
}

#[test]
fn a_colour_profile_the_output_cannot_hold_is_named_in_a_warning() {
    use image::ImageEncoder;
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let input = dir.path().join("profiled.png");
    let mut png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    encoder.set_icc_profile(vec![3; 200]).unwrap();
    let pixels = rgb8(10, 7, 4);
    encoder.write_image(pixels.as_raw(), 10, 7, image::ExtendedColorType::Rgb8).unwrap();
    std::fs::write(&input, png).unwrap();
    for (ext, warned) in [("png", false), ("ppm", true)] {
        let output = dir.path().join(format!("out.{ext}"));
        let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]);
        assert_ok(&out);
        let err = stderr(&out);
        let named =
            err.starts_with("maskdcpt: warning: ") && err.contains("out.ppm") && err.contains("ICC colour profile");
        assert_eq!(named, warned, "{ext}: {err}");
        assert_eq!(err.is_empty(), !warned, "{ext}: {err}");
    }
}

#[test]
fn folder_mode_restores_the_good_files_and_lists_the_bad_ones() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    rgb8(16, 12, 1).save(input.join("a.png")).unwrap();
    write_npy(&input.join("b.npy"), &[10, 14, 3], &pattern(14, 10, 2));
    std::fs::write(input.join("c.txt"), "not an image").unwrap();
    std::fs::write(input.join("d.png"), "not a png either").unwrap();
    rgb8(9, 9, 3).save(input.join("e.jpg")).unwrap();
    std::fs::write(input.join(".hidden"), "ignored").unwrap();
    std::fs::create_dir(input.join("sub")).unwrap();
    let output = dir.path().join("out").join("nested");

    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("maskdcpt: error: ") && l.contains("c.txt") && l.contains("unsupported")),
        "{err}"
    );
    assert!(
        err.lines().any(|l| l.starts_with("maskdcpt: error: ") && l.contains("d.png") && l.contains("decode")),
        "{err}"
    );
    assert!(err.lines().any(|l| l.starts_with("maskdcpt: warning: ") && l.contains("sub")), "{err}");
    let last = err.lines().last().unwrap();
    assert_eq!(last, "maskdcpt: error: 2 of 5 files failed: c.txt, d.png");
    assert_eq!(listing(&output), ["a.png", "b.npy", "e.jpg"]);
    assert_eq!(read_npy(&output.join("b.npy")).0, [10, 14, 3]);
}

#[test]
fn folder_mode_succeeds_when_every_file_is_an_image() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    rgb8(16, 12, 1).save(input.join("x.png")).unwrap();
    rgb8(8, 5, 2).save(input.join("y.tif")).unwrap();
    let output = dir.path().join("out");
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]);
    assert_ok(&out);
    assert_eq!(listing(&output), ["x.png", "y.tif"]);
    // Restoring a folder into itself would overwrite the inputs.
    assert_error(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&input)]), &["input folder"]);
}

/// Runs `restore` on `input` into `<dir>/out.<ext>` and checks the failure and that nothing
/// was written.
fn assert_restore_fails(dir: &Path, model: &Path, input: &Path, ext: &str, needles: &[&str]) {
    let output = dir.join(format!("out.{ext}"));
    let before = listing(dir);
    assert_error(&maskdcpt(&["restore", "-m", s(model), "-i", s(input), "-o", s(&output)]), needles);
    assert!(!output.exists());
    assert_eq!(listing(dir), before, "a file was left behind");
}

#[test]
fn bad_inputs_fail_with_one_line_and_no_output() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let good = dir.path().join("good.png");
    rgb8(8, 8, 1).save(&good).unwrap();

    let missing = dir.path().join("missing.safetensors");
    assert_restore_fails(dir.path(), &missing, &good, "png", &["missing.safetensors", "No such file"]);

    let corrupt = dir.path().join("corrupt.safetensors");
    let mut rng = Lcg(1);
    std::fs::write(&corrupt, (0..4096).map(|_| (rng.uniform() * 256.0) as u8).collect::<Vec<u8>>()).unwrap();
    assert_restore_fails(dir.path(), &corrupt, &good, "png", &["corrupt.safetensors", "corrupt"]);

    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, "this is text, not a PNG").unwrap();
    assert_restore_fails(dir.path(), &model, &garbage, "png", &["garbage.png", "cannot decode"]);

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert_restore_fails(dir.path(), &model, &empty, "png", &["empty.jpg", "empty"]);

    let absent = dir.path().join("absent.png");
    assert_restore_fails(dir.path(), &model, &absent, "png", &["absent.png", "No such file"]);

    let nan = dir.path().join("nan.npy");
    let mut data = pattern(5, 4, 1);
    data[7] = f32::NAN;
    write_npy(&nan, &[4, 5, 3], &data);
    assert_restore_fails(dir.path(), &model, &nan, "npy", &["nan.npy", "NaN", "finite"]);

    let inf = dir.path().join("inf.npy");
    data[7] = f32::INFINITY;
    write_npy(&inf, &[4, 5, 3], &data);
    assert_restore_fails(dir.path(), &model, &inf, "png", &["inf.npy", "inf"]);

    let two_d = dir.path().join("two_d.npy");
    write_npy(&two_d, &[6, 10], &pattern(5, 4, 1));
    assert_restore_fails(dir.path(), &model, &two_d, "npy", &["two_d.npy", "shape [6, 10]"]);

    let four_channels = dir.path().join("rgba.npy");
    write_npy(&four_channels, &[3, 5, 4], &pattern(5, 4, 1));
    assert_restore_fails(dir.path(), &model, &four_channels, "npy", &["rgba.npy", "shape [3, 5, 4]"]);

    let zero = dir.path().join("zero.npy");
    write_npy(&zero, &[0, 5, 3], &[]);
    assert_restore_fails(dir.path(), &model, &zero, "npy", &["zero.npy", "5×0"]);

    let f64_npy = dir.path().join("f64.npy");
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::<f64>::new().default_dtype().shape(&[2, 2, 3]).writer(&mut buf).begin_nd().unwrap();
    w.extend((0..12).map(f64::from)).unwrap();
    w.finish().unwrap();
    std::fs::write(&f64_npy, buf).unwrap();
    assert_restore_fails(dir.path(), &model, &f64_npy, "npy", &["f64.npy", "dtype `<f8`", "float32"]);

    let truncated = dir.path().join("truncated.npy");
    write_npy(&truncated, &[4, 5, 3], &pattern(5, 4, 1));
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    assert_restore_fails(dir.path(), &model, &truncated, "npy", &["truncated.npy", "bytes"]);

    assert_restore_fails(dir.path(), &model, &good, "bmp", &["out.bmp", "unsupported file type"]);
}

#[test]
fn tiled_global_equals_untiled_and_local_runs() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let (w, h) = (40, 36);
    let input = dir.path().join("in.npy");
    write_npy(&input, &[h, w, 3], &pattern(w as usize, h as usize, 21));
    let whole = dir.path().join("whole.npy");
    let tiled = dir.path().join("tiled.npy");
    let local = dir.path().join("local.npy");
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&whole)]));
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&tiled), "--tile", "16"]));
    let diff = max_diff(&read_npy(&whole).1, &read_npy(&tiled).1);
    assert!(diff < 1e-5, "tiled global differs by {diff}");
    let args = ["--tile", "16", "--tile-overlap", "8", "--sca", "local", "--threads", "1"];
    let out = maskdcpt(&[&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&local)][..], &args].concat());
    assert_ok(&out);
    assert_eq!(read_npy(&local).0, [h, w, 3]);
    // Blending the local tiles moves the pixels near tile borders (x = 16, 32; y = 16, 32) only.
    let blended_path = dir.path().join("blended.npy");
    let restore_blended = [&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&blended_path)][..], &args].concat();
    assert_ok(&maskdcpt(&[&restore_blended[..], &["--tile-blend"]].concat()));
    let (pasted, blended) = (read_npy(&local).1, read_npy(&blended_path).1);
    let near_border = |p: usize| [16, 32].iter().any(|&t| p.abs_diff(t) <= 8);
    let moved: Vec<_> = (0..pasted.len())
        .filter(|&i| pasted[i] != blended[i])
        .map(|i| (i / 3 % w as usize, i / 3 / w as usize))
        .collect();
    assert!(!moved.is_empty() && moved.iter().all(|&(x, y)| near_border(x) || near_border(y)), "{moved:?}");
    let out = maskdcpt(&[
        "restore",
        "-m",
        s(&model),
        "-i",
        s(&input),
        "-o",
        s(&blended_path),
        "--tile",
        "16",
        "--tile-blend",
    ]);
    assert_error(&out, &["blending", "--sca local"]);
}

/// `--tile auto --sca local` runs whole within the budget and in tiles below it; bench
/// reports the tiles, and `auto` needs local means.
#[test]
fn automatic_tiles_follow_the_memory_limit() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let bench = |size: &str, limit: &str| {
        let args = ["--tile", "auto", "--sca", "local", "--tile-overlap", "8", "--memory-limit-mb", limit];
        let common = ["bench", "-m", s(&model), "--height", size, "--width", size, "--iters", "1", "--warmup", "0"];
        let out = maskdcpt(&[&common[..], &args].concat());
        assert_ok(&out);
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()
    };
    let roomy = bench("64", "4096");
    assert_eq!((roomy["tile"].as_str(), roomy["memory_limit_mb"].as_u64()), (Some("auto"), Some(4096)));
    assert!(roomy["local_tiles"].is_null(), "{roomy}");
    let tight = bench("1024", "24");
    let tile = tight["local_tiles"]["tile"].as_u64().expect("1024² in 24 MiB needs tiles");
    assert!(tile > 0 && tile < 1024 && (tile + 16) % 16 == 0, "{tight}");
    assert_eq!(tight["local_tiles"]["overlap"], 8);

    let input = dir.path().join("in.npy");
    write_npy(&input, &[20, 24, 3], &pattern(24, 20, 5));
    let out =
        maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&dir.path().join("o.npy")), "--tile", "auto"]);
    assert_error(&out, &["--sca local"]);
    for bad in ["0", "big"] {
        let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", "o.npy", "--tile", bad]);
        assert_eq!(out.status.code(), Some(2), "--tile {bad}");
    }
}

#[test]
fn bench_prints_one_json_line_with_the_required_fields() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let out =
        maskdcpt(&["bench", "-m", s(&model), "--height", "24", "--width", "20", "--iters", "3", "--threads", "1"]);
    assert_ok(&out);
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["median_ms", "min_ms", "mean_ms", "gmacs", "gflops"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert!(v["min_ms"].as_f64() <= v["median_ms"].as_f64());
    assert_eq!(v["iters"], 3);
    assert_eq!(v["threads"], 1);
    assert_eq!(v["height"], 24);
    assert_eq!(v["width"], 20);
    assert_eq!(v["precision"], "f32");
    assert!(["avx512", "avx2", "gemm"].contains(&v["cpu_products"].as_str().unwrap_or("")), "{v}");
    assert_eq!(v["model"], s(&model));
    let expected_gmacs = tiny_spec().macs(32, 32) as f64 / 1e9;
    assert!((v["gmacs"].as_f64().unwrap() - expected_gmacs).abs() < 1e-12, "{v}");
    if cfg!(target_os = "linux") {
        assert!(v["peak_rss_mb"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    }

    // Without --threads, the number of available cores is reported.
    let out = maskdcpt(&["bench", "-m", s(&model), "--height", "8", "--width", "8", "--iters", "1", "--warmup", "0"]);
    assert_ok(&out);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(v["threads"], cores);
}

#[test]
fn usage_errors_exit_with_code_2() {
    assert_eq!(maskdcpt(&["restore", "-m", "x"]).status.code(), Some(2));
    assert_eq!(
        maskdcpt(&["restore", "-m", "x", "-i", "a.png", "-o", "b.png", "--sca", "local"]).status.code(),
        Some(2)
    );
    assert_eq!(maskdcpt(&["bench", "-m", "x", "--height", "0", "--width", "8"]).status.code(), Some(2));
    assert_eq!(maskdcpt(&["convert", "x", "-o", "y.safetensors", "--dtype", "bf16"]).status.code(), Some(2));
}

/// `build-engine` reports what is missing: the TensorRT backend in this build, or (built with
/// the `tensorrt` feature, on hosts without TensorRT, as every test host is) the library. It
/// leaves no file behind, and refuses malformed sizes as usage errors.
#[test]
fn build_engine_reports_what_is_missing() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let engine = dir.path().join("tiny.engine");
    let base = ["build-engine", "-m", s(&model), "-o", s(&engine), "--backend", "tensorrt"];
    let out = maskdcpt(&[&base[..], &["--fp16", "--min", "16x16", "--opt", "64x96", "--max", "128x128"]].concat());
    let missing =
        if cfg!(feature = "tensorrt") { "TensorRT library not found" } else { "built without the TensorRT backend" };
    assert_error(&out, &[missing]);
    assert_eq!(listing(dir.path()), ["tiny.safetensors"]);
    let out = maskdcpt(&[&base[..], &["--max", "64x64", "--tlc"]].concat());
    assert_error(&out, &["--tlc", "not TensorRT", "--backend cuda"]);
    for bad in ["128", "0x64", "64x", "axb"] {
        let out = maskdcpt(&[&base[..], &["--max", bad]].concat());
        assert_eq!(out.status.code(), Some(2), "--max {bad}: {}", stderr(&out));
    }
    // One fixed size: --height with --width, instead of (never with) --min/--opt/--max.
    assert_error(&maskdcpt(&[&base[..], &["--height", "64", "--width", "96"]].concat()), &[missing]);
    for bad in [&["--height", "64"][..], &["--height", "64", "--width", "64", "--max", "64x64"], &[], &["--width", "0"]]
    {
        let out = maskdcpt(&[&base[..], bad].concat());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
}

/// `build-engine --backend cuda` writes an engine file where a GPU is present and otherwise
/// says what is missing and writes nothing; `--engine`, `--fusion` and `--serial-launches`
/// belong to the cuda backend.
#[test]
fn cuda_engine_files_need_a_gpu_and_the_cuda_backend() {
    let dir = TempDir::new().unwrap();
    let model = write_model(dir.path());
    let engine = dir.path().join("tiny.cuda-engine");
    let cache = dir.path().join("cache");
    // The default model (the test model is 4 channels wide; the cuda backend needs 8k).
    let build = ["build-engine", "-o", s(&engine), "--backend", "cuda", "--max", "64x48", "--batch", "2"];
    let out = maskdcpt(&[&build[..], &["--cache-dir", s(&cache)]].concat());
    if out.status.success() {
        assert!(engine.exists() && stderr(&out).contains("written"), "{}", stderr(&out));
    } else {
        assert_error(&out, &["CUDA"]);
        assert_eq!(listing(dir.path()), ["tiny.safetensors"]);
    }
    let image = dir.path().join("in.npy");
    write_npy(&image, &[8, 8, 3], &pattern(8, 8, 1));
    let output = dir.path().join("out.npy");
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&image), "-o", s(&output), "--engine", s(&engine)]);
    assert_error(&out, &["--engine", "--backend cuda"]);
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&image), "-o", s(&output), "--fusion", "fused"]);
    assert_error(&out, &["--fusion", "--backend cuda"]);
    let out = maskdcpt(&["restore", "-m", s(&model), "-i", s(&image), "-o", s(&output), "--serial-launches"]);
    assert_error(&out, &["--serial-launches", "--backend cuda"]);
    assert!(!output.exists());
}

/// Restormer, PromptIR and SwinIR checkpoints (the golden ones): `info` names the
/// architecture, `restore` is the core engine (whole and in local tiles), `export-onnx` writes
/// them (`scripts/test-onnx.sh` runs the files), and the NAFNet-only paths refuse them by name.
#[test]
fn transformer_checkpoints_restore_on_the_cpu() {
    let dir = TempDir::new().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/restormer/restormer_w8.pth");
    let out = maskdcpt(&["info", "--json", s(&model)]);
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(info["family"], "restormer");
    assert_eq!(info["heads"], serde_json::json!([1, 2, 4, 8]));
    assert_eq!((info["size_multiple"].as_u64(), info["refinement_blocks"].as_u64()), (Some(8), Some(1)));

    let (w, h) = (29, 21);
    let data = pattern(w, h, 9);
    let (input, output) = (dir.path().join("in.npy"), dir.path().join("out.npy"));
    write_npy(&input, &[h as u64, w as u64, 3], &data);
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
    assert_eq!(read_npy(&output).1, core_restore(&model, w, h, data.clone()));
    let tiles = ["--tile", "16", "--tile-overlap", "8", "--sca", "local", "--tile-blend"];
    assert_ok(&maskdcpt(&[&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)][..], &tiles[..]].concat()));
    let tiling = Tiling { tile: TileSize::Pixels(16), overlap: 8, sca: ScaMode::Local, blend: true };
    let options = EngineOptions { tiling: Some(tiling), ..Default::default() };
    assert_eq!(read_npy(&output).1, core_restore_with(&model, &options, w, h, data));

    let refused = |args: &[&str], needles: &[&str]| assert_error(&maskdcpt(args), needles);
    let restore = ["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)];
    refused(&[&restore[..], &["--backend", "cuda"]].concat(), &["CUDA engine runs NAFNet networks only", "restormer"]);
    refused(&[&restore[..], &["--tlc"]].concat(), &["TLC", "Restormer"]);
    let onnx = dir.path().join("m.onnx");
    let export = ["export-onnx", "-m", s(&model), "-o", s(&onnx), "--height", "21", "--width", "29"];
    refused(&[&export[..], &["--tlc"]].concat(), &["TLC", "restormer", "without `--tlc`"]);
    assert!(!onnx.exists());
    let out = maskdcpt(&export);
    assert_ok(&out);
    assert!(stderr(&out).contains("wrote") && std::fs::metadata(&onnx).unwrap().len() > 1000, "{}", stderr(&out));

    // PromptIR through the same paths.
    let model = model.with_file_name("promptir_w8.pth");
    let out = maskdcpt(&["info", "--json", s(&model)]);
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(info["family"], "promptir");
    assert_ok(&maskdcpt(&["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)]));
    assert_eq!(read_npy(&output).1, core_restore(&model, w, h, pattern(w, h, 9)));

    // SwinIR, with heads and window from the file's metadata.
    let model = model.parent().unwrap().join("../swinir/swinir_w12_heads.safetensors");
    let out = maskdcpt(&["info", "--json", s(&model)]);
    assert_ok(&out);
    let info: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(info["family"], "swinir");
    assert_eq!(info["heads"], serde_json::json!([2, 3, 1, 4, 6, 2]));
    assert_eq!((info["window"].as_u64(), info["size_multiple"].as_u64()), (Some(4), Some(4)));
    let restore = ["restore", "-m", s(&model), "-i", s(&input), "-o", s(&output)];
    assert_ok(&maskdcpt(&restore));
    assert_eq!(read_npy(&output).1, core_restore(&model, w, h, pattern(w, h, 9)));
    assert_ok(&maskdcpt(&[&restore[..], &tiles[..]].concat()));
    assert_eq!(read_npy(&output).1, core_restore_with(&model, &options, w, h, pattern(w, h, 9)));
    refused(&[&restore[..], &["--backend", "cuda"]].concat(), &["CUDA engine runs NAFNet networks only", "swinir"]);
    refused(&[&restore[..], &["--tlc"]].concat(), &["TLC", "SwinIR"]);
}
