//! ONNX export (opset 17): NAFNet lowered from the op graph like every backend, and the
//! fork's transformers (Restormer, PromptIR, SwinIR) lowered from their specs.
//!
//! The exported model is self-contained and follows the network's image rule: input
//! `input` float32 `[N, 3, H, W]` RGB in [0, 1] of any size, padded inside the model to the
//! network's size multiple (reflect, or zeros for upstream NAFNet), run, and cropped back, so
//! its output `output` equals `maskdcpt restore`'s raw output for images of any size (reflect
//! padding gathers mirrored rows and columns, so pads longer than a side mirror on).
//!
//! LayerNorm is exported as `LayerNormalization` over the last axis (between two `Transpose`s
//! for channel norms), which TensorRT ≥ 8.6 runs in FP32 even in FP16 engines. With `fp16`,
//! weights and activations are float16; each LayerNorm, and the transformers' attention maps
//! (norms, products and softmax) and PromptIR's prompt weights, are wrapped in explicit casts
//! so they run in float32.

mod builder;
mod nafnet;
mod restormer;
mod swinir;

use crate::error::{Error, Result};
use crate::model::Model;
use crate::spec::Architecture;
use crate::tlc::AttentionPool;

/// ONNX opset the exporter targets.
pub const OPSET: i64 = 17;
/// IR version matching [`OPSET`].
const IR_VERSION: i64 = 8;

/// Spatial shape of the exported input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxShape {
    /// Batch, height and width are symbolic (`batch`, `height`, `width`).
    Dynamic,
    /// Batch 1 and a fixed `height × width`.
    Fixed {
        /// Input height in pixels.
        height: usize,
        /// Input width in pixels.
        width: usize,
    },
}

/// Export settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnnxOptions {
    /// Float16 weights and activations (LayerNorm and attention maps still in float32).
    pub fp16: bool,
    /// Input shape.
    pub shape: OnnxShape,
    /// How NAFNet's channel attention averages its map (TLC needs a fixed shape; the
    /// transformers take global attention only).
    pub attention_pool: AttentionPool,
}

/// Serialises `model` as an ONNX model.
pub fn export(model: &Model, options: &OnnxOptions) -> Result<Vec<u8>> {
    if let OnnxShape::Fixed { height: 0, .. } | OnnxShape::Fixed { width: 0, .. } = options.shape {
        return Err(Error::InvalidArgument("a fixed ONNX input shape needs a height and width of at least 1".into()));
    }
    let architecture = model.architecture();
    if !matches!(architecture, Architecture::Nafnet(_)) && options.attention_pool != AttentionPool::Global {
        return Err(Error::Unsupported(format!(
            "TLC windows belong to NAFNet's simplified channel attention, which this `{}` network has none of: \
             export it without `--tlc`",
            architecture.name()
        )));
    }
    match architecture {
        Architecture::Nafnet(spec) => nafnet::export(model, spec, options),
        Architecture::Restormer(spec) => restormer::export(model, spec, options),
        Architecture::Swinir(spec) => swinir::export(model, spec, options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testing::{random_architecture, random_model};
    use crate::spec::restormer::{PromptStage, RestormerSpec};
    use crate::spec::swinir::SwinirSpec;
    use crate::spec::{Family, ModelSpec};
    use crate::weights::{Format, Tensor, WeightStore};

    fn spec() -> ModelSpec {
        ModelSpec {
            family: Family::MaskDcpt,
            width: 4,
            enc_blocks: vec![1, 2],
            middle_blocks: 1,
            dec_blocks: vec![1, 1],
        }
    }

    /// Options with whole-map channel attention.
    fn global(fp16: bool, shape: OnnxShape) -> OnnxOptions {
        OnnxOptions { fp16, shape, attention_pool: AttentionPool::Global }
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack.windows(needle.len()).filter(|w| *w == needle).count()
    }

    #[test]
    fn every_layer_norm_is_exported_as_layer_normalization() {
        let model = random_model(&spec(), 7);
        let blocks = 1 + 2 + 1 + 1 + 1;
        for fp16 in [false, true] {
            let bytes = export(&model, &global(fp16, OnnxShape::Dynamic)).unwrap();
            assert_eq!(count(&bytes, b"\x12LayerNormalization"), 2 * blocks, "fp16 {fp16}");
            assert_eq!(count(&bytes, b"DepthToSpace"), 2 * 2, "op type and node name per up step");
            assert_eq!(count(&bytes, b"reflect"), 0, "reflect is gathered, not a Pad mode");
            assert_eq!(count(&bytes, b"\x06Gather"), 2, "rows, then columns");
        }
    }

    #[test]
    fn tlc_attention_pools_windows_where_they_are_smaller_than_the_maps() {
        let model = random_model(&spec(), 7);
        let tlc = AttentionPool::Tlc { train_height: 16, train_width: 16 };
        let fixed =
            |height, width| OnnxOptions { attention_pool: tlc, ..global(false, OnnxShape::Fixed { height, width }) };
        // Windows of 24, 12 and 6 pixels at levels 0-2: smaller than every map of 40x60 (padded
        // 48x64), none of 8x8 (padded 16x16).
        let windowed = export(&model, &fixed(40, 60)).unwrap();
        assert_eq!((count(&windowed, b"\x0bAveragePool"), count(&windowed, b"\x04edge")), (6, 6));
        assert_eq!(count(&windowed, b"\x11GlobalAveragePool"), 0);
        let small = export(&model, &fixed(8, 8)).unwrap();
        assert_eq!((count(&small, b"\x0bAveragePool"), count(&small, b"\x11GlobalAveragePool")), (0, 6));
        let dynamic = OnnxOptions { shape: OnnxShape::Dynamic, ..fixed(8, 8) };
        assert!(export(&model, &dynamic).unwrap_err().to_string().contains("fixed input size"));
        let tiny =
            OnnxOptions { attention_pool: AttentionPool::Tlc { train_height: 8, train_width: 8 }, ..fixed(8, 8) };
        assert!(export(&model, &tiny).unwrap_err().to_string().contains("size multiple 16"));
    }

    #[test]
    fn weights_beyond_float16_are_refused_for_fp16_only() {
        let model = random_model(&spec(), 7);
        let mut tensors: std::collections::BTreeMap<String, Tensor> =
            model.weights().iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
        tensors.insert("intro.bias".into(), Tensor::from_f32(vec![4], &[0.0, 1e6, 0.0, 0.0]).unwrap());
        let model = Model::from_weights(WeightStore::new(tensors, Format::Safetensors, None)).unwrap();
        let fixed = OnnxShape::Fixed { height: 8, width: 8 };
        assert!(export(&model, &global(false, fixed)).is_ok());
        let err = export(&model, &global(true, fixed)).unwrap_err().to_string();
        assert!(err.contains("intro.bias") && err.contains("flat index 1"), "{err}");
        let zero = OnnxShape::Fixed { height: 0, width: 8 };
        assert!(export(&model, &global(false, zero)).is_err());
    }

    /// A Restormer of width 4 with one block per stage, with prompt stages (PromptIR) or not.
    fn restormer(prompted: bool) -> Architecture {
        let stage = |channels, out| PromptStage { channels, count: 3, size: 5, heads: 2, hidden: 10, out };
        Architecture::Restormer(RestormerSpec {
            dim: 4,
            blocks: [1; 4],
            refinement: 1,
            heads: [1, 1, 2, 2],
            hidden: [5, 10, 21, 42],
            prompts: prompted.then(|| [stage(8, 16), stage(4, 16), stage(2, 8)]),
        })
    }

    /// A SwinIR of embed 12 (the default 6 heads and windows of 8) with 1 and 2 blocks.
    fn swinir() -> Architecture {
        Architecture::Swinir(SwinirSpec {
            embed_dim: 12,
            depths: vec![1, 2],
            encode_layers: 1,
            heads: vec![6; 2],
            window: 8,
            mlp_hidden: 24,
            qkv_bias: true,
            patch_norm: true,
        })
    }

    #[test]
    fn transformers_export_every_block() {
        // (architecture, blocks, extra LayerNorms, extra softmaxes, resizes)
        let cases = [(restormer(false), 8, 0, 0, 0), (restormer(true), 11, 0, 3, 3), (swinir(), 3, 2, 0, 0)];
        for (architecture, blocks, norms, softmaxes, resizes) in cases {
            let model = random_architecture(&architecture, 5);
            assert_eq!(model.architecture(), &architecture, "the random weights read back as the spec");
            for (fp16, shape) in [(false, OnnxShape::Dynamic), (true, OnnxShape::Fixed { height: 9, width: 30 })] {
                let bytes = export(&model, &global(fp16, shape)).unwrap();
                let name = architecture.name();
                assert_eq!(count(&bytes, b"\x12LayerNormalization"), 2 * blocks + norms, "{name} fp16 {fp16}");
                assert_eq!(count(&bytes, b"\x03Erf"), blocks, "{name}: one GELU per block");
                assert_eq!(count(&bytes, b"\x07Softmax"), blocks + softmaxes, "{name}");
                assert_eq!(count(&bytes, b"\x06Resize"), resizes, "{name}: one per prompt");
                assert_eq!(count(&bytes, b"\x04Cast") > 0, fp16, "{name}: casts around the float32 parts");
            }
        }
    }

    #[test]
    fn transformers_refuse_tlc_attention() {
        let tlc = OnnxOptions {
            attention_pool: AttentionPool::Tlc { train_height: 16, train_width: 16 },
            ..global(false, OnnxShape::Fixed { height: 16, width: 16 })
        };
        for architecture in [restormer(false), swinir()] {
            let err = export(&random_architecture(&architecture, 3), &tlc).unwrap_err().to_string();
            assert!(err.contains("without `--tlc`") && err.contains(architecture.name()), "{err}");
        }
    }
}
