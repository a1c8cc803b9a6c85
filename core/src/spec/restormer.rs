//! The `Restormer` class of the MaskDCPT BasicSR fork (`restormer_maskdcpt_5d.pth`): its
//! hyper-parameters inferred from keys and shapes, and every key it must have.
//!
//! Four levels of transformer blocks (channel LayerNorm with bias, eps 1e-5; multi-Dconv
//! transposed attention; gated-Dconv feed-forward with GELU), 3×3 convs with PixelUnshuffle
//! down and PixelShuffle up, skips concatenated, a refinement stage and the input added to the
//! 3×3 output. No biases anywhere (the fork ignores the `bias` argument in its blocks and the
//! released config leaves it false elsewhere). The harness reflect-pads bottom/right to a
//! multiple of 8.

use super::{IMAGE_CHANNELS, count_indices};
use crate::error::{Error, Result};
use crate::weights::WeightStore;

/// Levels of the U-shape (three down-samplings).
pub const LEVELS: usize = 4;

/// Multiple the harness pads to (`window_size: 8`), which the three down-samplings need.
pub const SIZE_MULTIPLE: usize = 8;

/// LayerNorm epsilon (`nn.LayerNorm` default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Name used in messages and `info`.
pub const NAME: &str = "restormer";

/// Hyper-parameters of a Restormer network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestormerSpec {
    /// Channels at full resolution (`patch_embed` output).
    pub dim: usize,
    /// Transformer blocks per encoder level (the last is the latent); the decoder repeats the
    /// first three.
    pub blocks: [usize; LEVELS],
    /// Blocks of the refinement stage.
    pub refinement: usize,
    /// Attention heads per level (the full-resolution decoder and refinement use the first).
    pub heads: [usize; LEVELS],
    /// Feed-forward hidden channels per block width `dim · 2^i` (`⌊width · expansion⌋`).
    pub hidden: [usize; LEVELS],
}

/// One transformer block: its key prefix, channels, heads and feed-forward width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformerSite {
    /// Key prefix, e.g. `encoder_level1.blocks.0`.
    pub prefix: String,
    /// Channels.
    pub channels: usize,
    /// Attention heads (they split the channels evenly).
    pub heads: usize,
    /// Feed-forward hidden channels.
    pub hidden: usize,
}

/// One stage of blocks: its key group, resolution level and block count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Key group, e.g. `encoder_level1`.
    pub group: &'static str,
    /// Resolution level (0 = full).
    pub level: usize,
    /// Index into [`RestormerSpec::heads`] / the width `dim · 2^width_index`.
    pub width_index: usize,
    /// Blocks in the stage.
    pub blocks: usize,
}

impl RestormerSpec {
    /// Channels of the blocks at `width_index` (`dim · 2^i`).
    pub fn width(&self, width_index: usize) -> usize {
        self.dim << width_index
    }

    /// The encoder stages, full resolution first, ending with the latent.
    pub fn encoder_stages(&self) -> [Stage; LEVELS] {
        let group = ["encoder_level1", "encoder_level2", "encoder_level3", "latent"];
        std::array::from_fn(|i| Stage { group: group[i], level: i, width_index: i, blocks: self.blocks[i] })
    }

    /// The decoder stages, lowest resolution first, then the refinement. The full-resolution
    /// decoder and the refinement run on the concatenation (`2 · dim` channels).
    pub fn decoder_stages(&self) -> [Stage; 4] {
        [
            Stage { group: "decoder_level3", level: 2, width_index: 2, blocks: self.blocks[2] },
            Stage { group: "decoder_level2", level: 1, width_index: 1, blocks: self.blocks[1] },
            Stage { group: "decoder_level1", level: 0, width_index: 1, blocks: self.blocks[0] },
            Stage { group: "refinement", level: 0, width_index: 1, blocks: self.refinement },
        ]
    }

    /// Block `block` of `stage`.
    pub fn block(&self, stage: &Stage, block: usize) -> TransformerSite {
        // The full-resolution decoder and refinement are twice as wide but keep level 0's heads.
        let heads = self.heads[stage.level];
        TransformerSite {
            prefix: format!("{}.blocks.{block}", stage.group),
            channels: self.width(stage.width_index),
            heads,
            hidden: self.hidden[stage.width_index],
        }
    }

    /// Every state-dict key with its shape, in network order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let d = self.dim;
        let mut out = vec![("patch_embed.proj.weight".to_owned(), vec![d, IMAGE_CHANNELS, 3, 3])];
        let downs = ["down1_2", "down2_3", "down3_4"];
        for stage in self.encoder_stages() {
            self.push_stage(&mut out, &stage);
            if let Some(down) = downs.get(stage.level) {
                let c = self.width(stage.level);
                out.push((format!("{down}.conv.weight"), vec![c / 2, c, 3, 3]));
            }
        }
        let ups = [("up4_3", Some("reduce_chan_level3")), ("up3_2", Some("reduce_chan_level2")), ("up2_1", None)];
        for (stage, (up, reduce)) in self.decoder_stages().iter().zip(ups) {
            let below = self.width(stage.level + 1);
            out.push((format!("{up}.conv.weight"), vec![2 * below, below, 3, 3]));
            if let Some(reduce) = reduce {
                out.push((format!("{reduce}.weight"), vec![below / 2, below, 1, 1]));
            }
            self.push_stage(&mut out, stage);
        }
        self.push_stage(&mut out, &self.decoder_stages()[3]);
        out.push(("output.weight".to_owned(), vec![IMAGE_CHANNELS, 2 * d, 3, 3]));
        out
    }

    fn push_stage(&self, out: &mut Vec<(String, Vec<usize>)>, stage: &Stage) {
        for b in 0..stage.blocks {
            let TransformerSite { prefix, channels: c, heads, hidden: h } = self.block(stage, b);
            let entries: [(&str, Vec<usize>); 10] = [
                ("norm1.weight", vec![c]),
                ("norm1.bias", vec![c]),
                ("attn.temperature", vec![heads, 1, 1]),
                ("attn.qkv.weight", vec![3 * c, c, 1, 1]),
                ("attn.qkv_dwconv.weight", vec![3 * c, 1, 3, 3]),
                ("attn.project_out.weight", vec![c, c, 1, 1]),
                ("norm2.weight", vec![c]),
                ("norm2.bias", vec![c]),
                ("ffn.project_in.weight", vec![2 * h, c, 1, 1]),
                ("ffn.dwconv.weight", vec![2 * h, 1, 3, 3]),
            ];
            for (suffix, shape) in entries {
                out.push((format!("{prefix}.{suffix}"), shape));
            }
            out.push((format!("{prefix}.ffn.project_out.weight"), vec![c, h, 1, 1]));
        }
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.expected_tensors().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Multiply-accumulates of one forward pass on a `height × width` (padded) input, the
    /// attention's two products included.
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let px = |level: usize| ((height >> level) * (width >> level)) as u64;
        let conv3 = |cin: usize, cout: usize, level: usize| px(level) * 9 * (cin * cout) as u64;
        let stage = |s: &Stage| {
            let (c, h) = (self.width(s.width_index) as u64, self.hidden[s.width_index] as u64);
            let head_dim = c / self.heads[s.level] as u64;
            // qkv, its depthwise, q·kᵀ and attn·v, project_out; project_in, its depthwise, project_out.
            let per_pixel = 3 * c * c + 27 * c + 2 * c * head_dim + c * c + 3 * c * h + 18 * h;
            s.blocks as u64 * px(s.level) * per_pixel
        };
        let mut total = conv3(IMAGE_CHANNELS, self.dim, 0) + conv3(2 * self.dim, IMAGE_CHANNELS, 0);
        for s in self.encoder_stages() {
            total += stage(&s);
            if s.level + 1 < LEVELS {
                let c = self.width(s.level);
                total += conv3(c, c / 2, s.level);
            }
        }
        for (i, s) in self.decoder_stages().iter().enumerate() {
            total += stage(s);
            if i < 3 {
                let below = self.width(s.level + 1);
                total += conv3(below, 2 * below, s.level + 1);
                if i < 2 {
                    total += px(s.level) * (below * below / 2) as u64;
                }
            }
        }
        total
    }

    /// Infers the hyper-parameters from `weights` (which hold `patch_embed.proj.weight`) and
    /// validates every key.
    pub fn infer(weights: &WeightStore) -> Result<Self> {
        let shape = |key: &str| -> Result<Vec<usize>> {
            weights
                .get(key)
                .map(|t| t.shape().to_vec())
                .ok_or_else(|| Error::UnknownArchitecture(format!("a Restormer needs `{key}`, which is missing")))
        };
        let dim = match shape("patch_embed.proj.weight")?.as_slice() {
            [d, c, 3, 3] if *c == IMAGE_CHANNELS && *d > 0 && d % 2 == 0 => *d,
            other => {
                return Err(Error::ShapeMismatch {
                    key: "patch_embed.proj.weight".into(),
                    expected: vec![0, IMAGE_CHANNELS, 3, 3],
                    found: other.to_vec(),
                });
            }
        };
        let keys: Vec<&str> = weights.iter().map(|(k, _)| k).collect();
        let groups = ["encoder_level1", "encoder_level2", "encoder_level3", "latent"];
        let blocks: [usize; LEVELS] = std::array::from_fn(|i| count_indices(&keys, &format!("{}.blocks.", groups[i])));
        let refinement = count_indices(&keys, "refinement.blocks.");
        let mut heads = [0; LEVELS];
        let mut hidden = [0; LEVELS];
        for (level, group) in groups.iter().enumerate() {
            if blocks[level] == 0 {
                return Err(Error::UnknownArchitecture(format!(
                    "Restormer stage `{group}` has no blocks (`{group}.blocks.0.*`): its heads and feed-forward \
                     width cannot be known"
                )));
            }
            let c = dim << level;
            let prefix = format!("{group}.blocks.0");
            heads[level] = match shape(&format!("{prefix}.attn.temperature"))?.as_slice() {
                [h, 1, 1] if *h > 0 && c % h == 0 => *h,
                other => {
                    return Err(Error::ShapeMismatch {
                        key: format!("{prefix}.attn.temperature"),
                        expected: vec![0, 1, 1],
                        found: other.to_vec(),
                    });
                }
            };
            hidden[level] = match shape(&format!("{prefix}.ffn.project_out.weight"))?.as_slice() {
                [out, h, 1, 1] if *out == c && *h > 0 => *h,
                other => {
                    return Err(Error::ShapeMismatch {
                        key: format!("{prefix}.ffn.project_out.weight"),
                        expected: vec![c, 0, 1, 1],
                        found: other.to_vec(),
                    });
                }
            };
        }
        let heads_of_full_width = (2 * dim) % heads[0];
        if heads_of_full_width != 0 {
            return Err(Error::UnknownArchitecture(format!(
                "{} heads do not split the {} channels of the full-resolution decoder",
                heads[0],
                2 * dim
            )));
        }
        let spec = RestormerSpec { dim, blocks, refinement, heads, hidden };
        spec.validate(weights)?;
        Ok(spec)
    }

    /// Checks that `weights` holds exactly this architecture's keys with the right shapes.
    /// A classification head's keys are unexpected too: the library has none for a Restormer.
    pub fn validate(&self, weights: &WeightStore) -> Result<()> {
        super::check_exact_keys(weights, &self.expected_tensors(), NAME, None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::weights::{Format, Tensor};
    use proptest::prelude::*;

    fn store_of(spec: &RestormerSpec) -> WeightStore {
        let tensors = spec
            .expected_tensors()
            .into_iter()
            .map(|(key, shape)| {
                let n = shape.iter().product();
                (key, Tensor::from_f32(shape, &vec![0.5; n]).unwrap())
            })
            .collect();
        WeightStore::new(tensors, Format::Safetensors, None)
    }

    proptest! {
        /// Any configuration is read back from its own keys and shapes; dropping or renaming a
        /// key is an error that names it.
        #[test]
        fn any_configuration_is_read_back_from_its_keys(
            half_dim in 1usize..6,
            blocks in proptest::array::uniform4(1usize..3),
            refinement in 0usize..3,
            head_powers in proptest::array::uniform4(0u32..3),
            expansion in 1usize..4,
            drop in any::<prop::sample::Index>(),
        ) {
            let dim = 2 * half_dim;
            let heads = std::array::from_fn(|level| {
                // Heads divide the level's channels (and the full-resolution decoder's).
                let h = 1usize << head_powers[level];
                if (dim << level) % h == 0 && (level > 0 || (2 * dim) % h == 0) { h } else { 1 }
            });
            let hidden = std::array::from_fn(|i| (dim << i) * expansion + 1);
            let spec = RestormerSpec { dim, blocks, refinement, heads, hidden };
            let store = store_of(&spec);
            prop_assert_eq!(RestormerSpec::infer(&store).unwrap(), spec.clone());
            let expected = spec.expected_tensors();
            let (key, _) = &expected[drop.index(expected.len())];
            let mut tensors: std::collections::BTreeMap<String, Tensor> =
                store.iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
            let tensor = tensors.remove(key).unwrap();
            let missing = WeightStore::new(tensors.clone(), Format::Safetensors, None);
            let err = RestormerSpec::infer(&missing).unwrap_err().to_string();
            prop_assert!(err.contains(key.as_str()) || err.contains("no blocks"), "{}", err);
            tensors.insert(format!("{key}.extra"), tensor);
            let renamed = WeightStore::new(tensors, Format::Safetensors, None);
            prop_assert!(RestormerSpec::infer(&renamed).is_err());
        }
    }

    /// The released configuration (`test_Restormer_5d.yml`: the class defaults).
    pub fn released() -> RestormerSpec {
        RestormerSpec {
            dim: 48,
            blocks: [4, 6, 6, 8],
            refinement: 4,
            heads: [1, 2, 4, 8],
            hidden: [127, 255, 510, 1021],
        }
    }

    #[test]
    fn released_config_has_the_published_parameter_count() {
        let spec = released();
        assert_eq!(spec.param_count(), 26_126_644);
        assert_eq!(spec.expected_tensors().len(), 494);
    }

    #[test]
    fn released_config_macs_match_flop_counter() {
        // torch FlopCounter: 309.8 GFLOPs at 256×256 (spec §7), attention products included.
        let gmacs = released().macs(256, 256) as f64 / 1e9;
        assert!((gmacs - 154.9).abs() < 0.5, "{gmacs}");
    }

    #[test]
    fn wide_stages_keep_the_first_levels_heads() {
        let spec = released();
        let [_, _, dec1, refine] = spec.decoder_stages();
        for stage in [dec1, refine] {
            let site = spec.block(&stage, 0);
            assert_eq!((site.channels, site.heads, site.hidden), (96, 1, 255), "{}", site.prefix);
        }
    }
}
