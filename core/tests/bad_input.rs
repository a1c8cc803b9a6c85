//! Bad models and bad images: each is a clear error naming the problem, never a panic.

use std::collections::BTreeMap;

use maskdcpt_core::Error;
use maskdcpt_core::backend::{Backend, EngineOptions, LocalTiles, ScaMode, TileSize, Tiling, build_engine};
use maskdcpt_core::image::Image;
use maskdcpt_core::model::Model;
use maskdcpt_core::spec::{Family, ModelSpec};
use maskdcpt_core::weights::{Format, Tensor, WeightStore};

fn tiny_spec() -> ModelSpec {
    ModelSpec { family: Family::MaskDcpt, width: 4, enc_blocks: vec![1, 1], middle_blocks: 1, dec_blocks: vec![1, 1] }
}

fn random_tensors(spec: &ModelSpec) -> BTreeMap<String, Tensor> {
    let mut state = 0x2545_f491_u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32 - 0.5) * 0.4
    };
    spec.expected_tensors()
        .into_iter()
        .map(|(key, shape)| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> =
                (0..n).map(|_| if key.contains("norm") && key.ends_with("weight") { 1.0 } else { next() }).collect();
            let tensor = Tensor::from_f32(shape, &values).unwrap();
            (key, tensor)
        })
        .collect()
}

fn model_from(tensors: BTreeMap<String, Tensor>) -> Result<Model, Error> {
    Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None))
}

fn tiny_model() -> Model {
    model_from(random_tensors(&tiny_spec())).unwrap()
}

#[test]
fn a_missing_key_is_named_with_its_shape() {
    let mut t = random_tensors(&tiny_spec());
    t.remove("encoders.1.blocks.0.conv4.weight");
    let err = model_from(t).unwrap_err();
    assert!(
        matches!(&err, Error::MissingKey { key, expected } if key == "encoders.1.blocks.0.conv4.weight" && expected == &vec![16, 8, 1, 1]),
        "{err}"
    );
}

#[test]
fn a_wrong_shape_is_named() {
    let mut t = random_tensors(&tiny_spec());
    t.insert("decoder1.blocks.0.conv5.bias".into(), Tensor::from_f32(vec![5], &[0.0; 5]).unwrap());
    let err = model_from(t).unwrap_err().to_string();
    assert!(err.contains("decoder1.blocks.0.conv5.bias") && err.contains("[4]") && err.contains("[5]"), "{err}");
}

#[test]
fn an_unexpected_key_is_named() {
    let mut t = random_tensors(&tiny_spec());
    t.insert("head.fc.weight".into(), Tensor::from_f32(vec![2], &[0.0; 2]).unwrap());
    let err = model_from(t).unwrap_err().to_string();
    assert!(err.contains("head.fc.weight"), "{err}");
}

/// Keys under `classifier.` are the classification head's, checked as a whole: a partial head
/// is refused naming what is missing instead of being ignored.
#[test]
fn a_partial_classification_head_is_named() {
    let mut t = random_tensors(&tiny_spec());
    t.insert("classifier.fc.bias".into(), Tensor::from_f32(vec![2], &[0.0; 2]).unwrap());
    let err = model_from(t).unwrap_err().to_string();
    assert!(err.contains("classifier.fc.weight"), "{err}");
}

#[test]
fn a_non_finite_weight_is_named() {
    let mut t = random_tensors(&tiny_spec());
    t.insert("intro.bias".into(), Tensor::from_f32(vec![4], &[0.0, 0.0, f32::INFINITY, 0.0]).unwrap());
    let err = model_from(t).unwrap_err();
    assert!(matches!(&err, Error::NonFinite { key, index: 2, .. } if key == "intro.bias"), "{err}");
}

#[test]
fn keys_of_another_network_are_an_unknown_architecture() {
    let tensors = |keys: &[(&str, Vec<usize>)]| -> BTreeMap<String, Tensor> {
        keys.iter()
            .map(|(k, shape)| {
                let n = shape.iter().product();
                ((*k).to_owned(), Tensor::from_f32(shape.clone(), &vec![0.0; n]).unwrap())
            })
            .collect()
    };
    let unknown = |t: BTreeMap<String, Tensor>, named: &str| match model_from(t) {
        Err(err @ Error::UnknownArchitecture(_)) => assert!(err.to_string().contains(named), "{err}"),
        other => panic!("{named}: {other:?}"),
    };
    let embed = ("patch_embed.proj.weight", vec![8, 3, 3, 3]);
    let first = ("conv_first.weight", vec![12, 3, 3, 3]);
    unknown(tensors(&[first.clone(), ("conv_after_body.weight", vec![12, 12, 3, 3])]), "SwinIR's first residual group");
    let bias_table = ("layers.0.residual_group.blocks.0.attn.relative_position_bias_table", vec![225, 6]);
    unknown(tensors(&[first, bias_table]), "upstream SwinIR");
    unknown(tensors(&[embed]), "encoder_level1");
    unknown(tensors(&[("conv.weight", vec![8, 3, 3, 3])]), "NAFBlock");
    unknown(BTreeMap::new(), "NAFBlock");
    // A Restormer's embedding of the wrong shape is named.
    let err = model_from(tensors(&[("patch_embed.proj.weight", vec![8, 4, 3, 3])])).unwrap_err();
    assert!(matches!(&err, Error::ShapeMismatch { key, .. } if key == "patch_embed.proj.weight"), "{err}");
}

#[test]
fn empty_and_non_finite_images_are_refused() {
    let engine = build_engine(&tiny_model(), &EngineOptions::default()).unwrap();
    assert!(Image::new(0, 0, vec![]).is_err());
    assert!(Image::new(0, 5, vec![]).is_err());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut data = vec![0.5; 4 * 3 * 3];
        data[7] = bad;
        let err = engine.restore(&Image::new(4, 3, data).unwrap()).unwrap_err();
        assert!(matches!(err, Error::InvalidImage(ref m) if m.contains("(x 2, y 0) channel 1")), "{err}");
    }
}

#[test]
fn one_pixel_and_thin_images_restore_to_their_own_size() {
    let engine = build_engine(&tiny_model(), &EngineOptions::default()).unwrap();
    for (w, h) in [(1, 1), (1, 9), (17, 1)] {
        let out = engine.restore(&Image::new(w, h, vec![0.25; w * h * 3]).unwrap()).unwrap();
        assert_eq!((out.width(), out.height()), (w, h));
        assert!(out.data().iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_run_over_the_memory_limit_is_an_error_with_a_hint() {
    let options = EngineOptions { memory_limit: Some(1 << 20), ..Default::default() };
    let engine = build_engine(&tiny_model(), &options).unwrap();
    let err = engine.restore(&Image::new(512, 512, vec![0.5; 512 * 512 * 3]).unwrap()).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
    assert!(err.to_string().contains("--tile"), "{err}");
    // Local tiles bound the memory: the same image fits in tiles.
    let tiling = Some(Tiling { tile: TileSize::Pixels(32), overlap: 8, sca: ScaMode::Local, blend: false });
    let tiled =
        build_engine(&tiny_model(), &EngineOptions { tiling, memory_limit: Some(8 << 20), ..Default::default() })
            .unwrap();
    let estimate = tiled.memory_estimate(512, 512).unwrap();
    assert!(estimate.total() < 8 << 20 && estimate.total() > 3 * 512 * 512 * 4, "{estimate:?}");
    assert!(tiled.restore(&Image::new(512, 512, vec![0.5; 512 * 512 * 3]).unwrap()).is_ok());
}

/// An automatic tile size runs an image whole when its run fits the memory budget, else in the
/// largest tiles that fit (exactly what that fixed tile size gives), and refuses a budget below
/// its smallest tile, or global means.
#[test]
fn automatic_tiles_fit_the_memory_budget() {
    let (w, h) = (300, 200);
    let img = Image::new(w, h, (0..w * h * 3).map(|i| (i % 97) as f32 / 97.0).collect()).unwrap();
    let local = |tile| Some(Tiling { tile, overlap: 8, sca: ScaMode::Local, blend: false });
    let auto = |limit| {
        let options = EngineOptions { tiling: local(TileSize::Auto), memory_limit: Some(limit), ..Default::default() };
        build_engine(&tiny_model(), &options).unwrap()
    };
    let fixed = |tile| {
        let options = EngineOptions { tiling: local(TileSize::Pixels(tile)), ..Default::default() };
        build_engine(&tiny_model(), &options).unwrap()
    };
    let whole = build_engine(&tiny_model(), &EngineOptions::default()).unwrap();

    let roomy = auto(1 << 40);
    assert_eq!(roomy.local_tiles(w, h).unwrap(), None);
    assert_eq!(roomy.restore(&img).unwrap(), whole.restore(&img).unwrap());

    let budget = whole.memory_estimate(w, h).unwrap().total() / 2;
    let tight = auto(budget);
    let tiles = tight.local_tiles(w, h).unwrap().expect("half the memory needs tiles");
    let LocalTiles { tile, overlap, blend: false } = tiles else { panic!("{tiles:?} blends") };
    assert_eq!(overlap, 8);
    assert_eq!((tile + 2 * overlap) % 16, 0, "runs of whole tiles are multiples of the size multiple");
    let estimate = tight.memory_estimate(w, h).unwrap();
    assert!(estimate.total() <= budget, "{estimate:?} over {budget}");
    assert_eq!(estimate, fixed(tile).memory_estimate(w, h).unwrap());
    assert!(fixed(tile + 16).memory_estimate(w, h).unwrap().total() > budget, "tile {tile} is not the largest");
    assert_eq!(tight.restore(&img).unwrap(), fixed(tile).restore(&img).unwrap());
    // The same size gets the same tile on every call, and other sizes their own.
    assert_eq!(tight.local_tiles(w, h).unwrap(), Some(tiles));
    assert_eq!(tight.local_tiles(40, 30).unwrap(), None);

    let starved = auto(64 << 10);
    for err in [starved.restore(&img).unwrap_err(), starved.memory_estimate(w, h).unwrap_err()] {
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
        assert!(err.to_string().contains("smallest automatic tile (16 pixels with 8 pixels of context)"), "{err}");
    }

    let global = Some(Tiling { tile: TileSize::Auto, overlap: 8, sca: ScaMode::Global, blend: false });
    let err = build_engine(&tiny_model(), &EngineOptions { tiling: global, ..Default::default() }).err().unwrap();
    assert!(matches!(err, Error::InvalidArgument(_)) && err.to_string().contains("--sca local"), "{err}");
}

/// `prepare` fails where the restore of that size would (an empty size, a run over the
/// memory limit) and leaves the result of a later restore unchanged.
#[test]
fn prepare_checks_the_size_and_memory_up_front() {
    let engine = build_engine(&tiny_model(), &EngineOptions::default()).unwrap();
    let img = Image::new(37, 21, (0..37 * 21 * 3).map(|i| (i % 89) as f32 / 89.0).collect()).unwrap();
    let cold = engine.restore(&img).unwrap();
    let fresh = build_engine(&tiny_model(), &EngineOptions::default()).unwrap();
    fresh.prepare(37, 21).unwrap();
    assert_eq!(fresh.restore(&img).unwrap(), cold);
    for (w, h) in [(0, 5), (5, 0)] {
        assert!(matches!(engine.prepare(w, h), Err(Error::InvalidImage(_))), "{w}x{h}");
    }
    let limited =
        build_engine(&tiny_model(), &EngineOptions { memory_limit: Some(1 << 20), ..Default::default() }).unwrap();
    let err = limited.prepare(512, 512).unwrap_err();
    assert!(matches!(err, Error::OutOfMemory { .. }) && err.to_string().contains("--tile"), "{err}");
    limited.prepare(16, 16).unwrap();
}

#[test]
fn invalid_options_are_refused() {
    let zero_threads = EngineOptions { threads: Some(0), ..Default::default() };
    assert!(matches!(build_engine(&tiny_model(), &zero_threads), Err(Error::InvalidArgument(_))));
    let zero_tile = EngineOptions {
        tiling: Some(Tiling { tile: TileSize::Pixels(0), overlap: 0, sca: ScaMode::Global, blend: false }),
        ..Default::default()
    };
    assert!(matches!(build_engine(&tiny_model(), &zero_tile), Err(Error::InvalidArgument(_))));
    // Checked before any device is opened, whatever the backend.
    for backend in [Backend::Cuda(Default::default()), Backend::TensorRt(Default::default())] {
        let zero_tile = EngineOptions { backend, ..zero_tile.clone() };
        assert!(matches!(build_engine(&tiny_model(), &zero_tile), Err(Error::InvalidArgument(_))));
    }
}

#[test]
fn one_engine_serves_many_threads_with_identical_results() {
    let engine = build_engine(&tiny_model(), &EngineOptions { threads: Some(2), ..Default::default() }).unwrap();
    let img = Image::new(19, 23, (0..19 * 23 * 3).map(|i| (i % 97) as f32 / 97.0).collect()).unwrap();
    let reference = engine.restore(&img).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| engine.restore(&img).unwrap())).collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), reference);
        }
    });
}

mod classification_head {
    use std::collections::BTreeMap;

    use maskdcpt_core::head::CLASSES_METADATA;
    use maskdcpt_core::model::{DEFAULT_MODEL, Model};
    use maskdcpt_core::weights::{Format, LoadOptions, Tensor, WeightStore};
    use proptest::prelude::*;

    fn head_tensors() -> BTreeMap<String, Tensor> {
        let store = WeightStore::from_bytes(DEFAULT_MODEL, &LoadOptions::default()).unwrap();
        store.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any head missing some of its tensors, or with one of them reshaped, is refused with
        /// an error naming a head key; never a panic, never a silently smaller head.
        #[test]
        fn damaged_heads_are_named_errors(seed in any::<u64>(), reshape in any::<bool>()) {
            let mut tensors = head_tensors();
            let keys: Vec<String> = tensors.keys().filter(|k| k.starts_with("classifier.")).cloned().collect();
            let victim = keys[(seed % keys.len() as u64) as usize].clone();
            if reshape {
                let n = tensors[&victim].numel();
                tensors.insert(victim.clone(), Tensor::from_f32(vec![n + 1], &vec![0.0; n + 1]).unwrap());
            } else {
                tensors.remove(&victim);
            }
            let err = Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None)).unwrap_err().to_string();
            prop_assert!(err.contains("classifier."), "{}", err);
        }

        /// Class-name metadata is untrusted text: any string loads or is refused cleanly, and
        /// loads exactly when it names as many classes as the head has outputs.
        #[test]
        fn arbitrary_class_names_never_panic(names in ".{0,200}") {
            let count = names.split(',').count();
            let store = WeightStore::new(head_tensors(), Format::Safetensors, None)
                .with_metadata(BTreeMap::from([(CLASSES_METADATA.to_owned(), names)]));
            prop_assert_eq!(Model::from_weights(store).is_ok(), count == 19);
        }
    }
}

mod swinir_metadata {
    use std::collections::BTreeMap;
    use std::path::Path;

    use maskdcpt_core::backend::{EngineOptions, build_engine};
    use maskdcpt_core::image::Image;
    use maskdcpt_core::model::Model;
    use maskdcpt_core::spec::Architecture;
    use maskdcpt_core::spec::swinir::{HEADS_METADATA, WINDOW_METADATA};
    use maskdcpt_core::weights::{Format, LoadOptions, WeightStore};
    use proptest::prelude::*;

    fn golden_with(metadata: &[(&str, &str)]) -> Result<Model, maskdcpt_core::Error> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/swinir/swinir_w12_heads.safetensors");
        let file = WeightStore::load(&path, &LoadOptions::default()).unwrap();
        let tensors = file.iter().map(|(k, v)| (k.to_owned(), v.clone())).collect();
        let metadata = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>();
        Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None).with_metadata(metadata))
    }

    /// A window's attention scores (tokens² per worker) are in the memory estimate, so a large
    /// window over the limit is refused up front rather than allocated.
    #[test]
    fn large_windows_count_their_attention_scratch() {
        let model = golden_with(&[(HEADS_METADATA, "1"), (WINDOW_METADATA, "100")]).unwrap();
        let options = EngineOptions { threads: Some(2), memory_limit: Some(200 << 20), ..Default::default() };
        let engine = build_engine(&model, &options).unwrap();
        let scores = 2 * 10_000u64 * 10_000 * 4;
        assert!(engine.memory_estimate(5, 3).unwrap().activations >= scores);
        let err = engine.restore(&Image::new(5, 3, vec![0.5; 45]).unwrap()).unwrap_err();
        assert!(matches!(err, maskdcpt_core::Error::OutOfMemory { .. }), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// A SwinIR's heads and window metadata are untrusted text: any pair of strings loads or
        /// is refused cleanly; what loads has heads that split the width and a window of 1-127,
        /// and restores an image to its own size with finite values.
        #[test]
        fn arbitrary_swinir_metadata_never_panics(
            heads in "((1|2|3|4|6|12)(,(1|2|3|4|6|12)){5})|(1|2|3|4|6|12)|[0-9]{1,3}(,[0-9]{1,3}){0,6}|.{0,12}",
            window in "[1-9]|[1-3][0-9]|[0-9]{1,4}|.{0,6}",
        ) {
            let Ok(model) = golden_with(&[(HEADS_METADATA, &heads), (WINDOW_METADATA, &window)]) else {
                return Ok(());
            };
            let Architecture::Swinir(spec) = model.architecture() else { panic!("not a SwinIR") };
            prop_assert!(spec.heads.iter().all(|&h| h > 0 && 12 % h == 0) && (1..=127).contains(&spec.window));
            let engine = build_engine(&model, &EngineOptions { threads: Some(1), ..Default::default() }).unwrap();
            let out = engine.restore(&Image::new(5, 3, vec![0.5; 45]).unwrap()).unwrap();
            prop_assert!((out.width(), out.height()) == (5, 3) && out.data().iter().all(|v| v.is_finite()));
        }
    }
}
