//! The `Restormer` and `PromptIR` classes of the MaskDCPT BasicSR fork
//! (`restormer_maskdcpt_5d.pth`, `promptir_maskdcpt_5d.pth`): their hyper-parameters inferred
//! from keys and shapes, and every key they must have.
//!
//! Four levels of transformer blocks (channel LayerNorm with bias, eps 1e-5; multi-Dconv
//! transposed attention; gated-Dconv feed-forward with GELU), 3×3 convs with PixelUnshuffle
//! down and PixelShuffle up, skips concatenated, a refinement stage and the input added to the
//! 3×3 output. Restormer has no biases (the fork ignores the `bias` argument in its blocks and
//! the released config leaves it false elsewhere). PromptIR adds biases to every block, 1×1
//! conv and the output conv, and a prompt stage before each up-sampling ([`PromptStage`]).
//! The harness reflect-pads bottom/right to a multiple of 8.

use super::{IMAGE_CHANNELS, count_indices};
use crate::error::{Error, Result};
use crate::weights::WeightStore;

/// Levels of the U-shape (three down-samplings).
pub const LEVELS: usize = 4;

/// Multiple the harness pads to (`window_size: 8`), which the three down-samplings need.
pub const SIZE_MULTIPLE: usize = 8;

/// LayerNorm epsilon (`nn.LayerNorm` default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// Key groups of the down-sampling after each encoder level but the latent (full resolution
/// first).
pub const DOWNS: [&str; LEVELS - 1] = ["down1_2", "down2_3", "down3_4"];

/// Key groups of each decoder level's up-sampling and of the 1×1 conv after its skip
/// (lowest resolution first; the full-resolution decoder has none).
pub const UPS: [(&str, Option<&str>); LEVELS - 1] =
    [("up4_3", Some("reduce_chan_level3")), ("up3_2", Some("reduce_chan_level2")), ("up2_1", None)];

/// PromptIR's stage before a decoder level's up-sampling: a prompt made from the feature
/// (`promptN`: softmax of a linear map of the feature's spatial mean mixes `count` learned
/// `channels × size × size` prompts, resized bilinearly to the feature, then a 3×3 conv),
/// concatenated to it, one transformer block (`noise_levelN`) and a 1×1 conv with bias
/// (`reduce_noise_levelN`) to `out` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptStage {
    /// Channels of a prompt.
    pub channels: usize,
    /// Learned prompts mixed.
    pub count: usize,
    /// Side of a learned prompt.
    pub size: usize,
    /// Heads of the block.
    pub heads: usize,
    /// Feed-forward hidden channels of the block.
    pub hidden: usize,
    /// Channels after the 1×1 conv.
    pub out: usize,
}

/// Hyper-parameters of a Restormer or PromptIR network.
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
    /// PromptIR's prompt stages, before each up-sampling (lowest resolution first); `None`
    /// for a Restormer.
    pub prompts: Option<[PromptStage; LEVELS - 1]>,
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
    /// `restormer` or `promptir`.
    pub fn name(&self) -> &'static str {
        if self.prompts.is_some() { "promptir" } else { "restormer" }
    }

    /// Whether blocks, 1×1 convs and the output conv have biases (PromptIR).
    pub fn has_bias(&self) -> bool {
        self.prompts.is_some()
    }

    /// Channels reaching decoder level `i` from below (the latent, or the decoder above).
    pub fn decoder_input(&self, i: usize) -> usize {
        self.width(LEVELS - 1 - i)
    }

    /// Channels entering decoder level `i`'s up conv (lowest resolution first): the prompt
    /// stage's output, or else the features from below.
    pub fn up_input(&self, i: usize) -> usize {
        self.prompts.map_or(self.decoder_input(i), |p| p[i].out)
    }

    /// Channels of decoder level `i`'s concatenation: the up-sampled features and the skip.
    pub fn concat_width(&self, i: usize) -> usize {
        self.up_input(i) / 2 + self.width(LEVELS - 2 - i)
    }

    /// PromptIR's transformer block of prompt stage `i` (its features plus the prompt).
    pub fn prompt_block(&self, i: usize, stage: &PromptStage) -> TransformerSite {
        TransformerSite {
            prefix: format!("noise_level{}", LEVELS - 1 - i),
            channels: self.decoder_input(i) + stage.channels,
            heads: stage.heads,
            hidden: stage.hidden,
        }
    }

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
        for stage in self.encoder_stages() {
            self.push_stage(&mut out, &stage);
            if let Some(down) = DOWNS.get(stage.level) {
                let c = self.width(stage.level);
                out.push((format!("{down}.conv.weight"), vec![c / 2, c, 3, 3]));
            }
        }
        for (i, (stage, (up, reduce))) in self.decoder_stages().iter().zip(UPS).enumerate() {
            if let Some(prompts) = &self.prompts {
                let (p, level) = (&prompts[i], LEVELS - 1 - i);
                let block = self.prompt_block(i, p);
                out.push((format!("prompt{level}.prompt_param"), vec![1, p.count, p.channels, p.size, p.size]));
                out.push((format!("prompt{level}.linear_layer.weight"), vec![p.count, self.decoder_input(i)]));
                out.push((format!("prompt{level}.linear_layer.bias"), vec![p.count]));
                out.push((format!("prompt{level}.conv3x3.weight"), vec![p.channels, p.channels, 3, 3]));
                self.push_block(&mut out, &block);
                out.push((format!("reduce_noise_level{level}.weight"), vec![p.out, block.channels, 1, 1]));
                out.push((format!("reduce_noise_level{level}.bias"), vec![p.out]));
            }
            let up_in = self.up_input(i);
            out.push((format!("{up}.conv.weight"), vec![2 * up_in, up_in, 3, 3]));
            if let Some(reduce) = reduce {
                let c = self.width(stage.level);
                out.push((format!("{reduce}.weight"), vec![c, self.concat_width(i), 1, 1]));
                if self.has_bias() {
                    out.push((format!("{reduce}.bias"), vec![c]));
                }
            }
            self.push_stage(&mut out, stage);
        }
        self.push_stage(&mut out, &self.decoder_stages()[3]);
        out.push(("output.weight".to_owned(), vec![IMAGE_CHANNELS, 2 * d, 3, 3]));
        if self.has_bias() {
            out.push(("output.bias".to_owned(), vec![IMAGE_CHANNELS]));
        }
        out
    }

    fn push_stage(&self, out: &mut Vec<(String, Vec<usize>)>, stage: &Stage) {
        for b in 0..stage.blocks {
            self.push_block(out, &self.block(stage, b));
        }
    }

    fn push_block(&self, out: &mut Vec<(String, Vec<usize>)>, site: &TransformerSite) {
        let TransformerSite { prefix, channels: c, heads, hidden: h } = site;
        let (c, h, heads) = (*c, *h, *heads);
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
        if self.has_bias() {
            let biases = [
                ("attn.qkv.bias", 3 * c),
                ("attn.qkv_dwconv.bias", 3 * c),
                ("attn.project_out.bias", c),
                ("ffn.project_in.bias", 2 * h),
                ("ffn.dwconv.bias", 2 * h),
                ("ffn.project_out.bias", c),
            ];
            for (suffix, len) in biases {
                out.push((format!("{prefix}.{suffix}"), vec![len]));
            }
        }
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        super::count_params(&self.expected_tensors())
    }

    /// Multiply-accumulates of one forward pass on a `height × width` (padded) input, the
    /// attention's two products included (the prompts' mixing and resizing are not).
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let px = |level: usize| ((height >> level) * (width >> level)) as u64;
        let conv3 = |cin: usize, cout: usize, level: usize| px(level) * 9 * (cin * cout) as u64;
        let block = |site: &TransformerSite, level: usize| {
            let (c, h) = (site.channels as u64, site.hidden as u64);
            let head_dim = c / site.heads as u64;
            // qkv, its depthwise, q·kᵀ and attn·v, project_out; project_in, its depthwise, project_out.
            px(level) * (3 * c * c + 27 * c + 2 * c * head_dim + c * c + 3 * c * h + 18 * h)
        };
        let stage = |s: &Stage| (0..s.blocks).map(|b| block(&self.block(s, b), s.level)).sum::<u64>();
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
            if i == LEVELS - 1 {
                continue;
            }
            if let Some(prompts) = &self.prompts {
                let (p, below) = (&prompts[i], s.level + 1);
                let site = self.prompt_block(i, p);
                total += conv3(p.channels, p.channels, below) + block(&site, below);
                total += px(below) * (site.channels * p.out) as u64;
            }
            let up_in = self.up_input(i);
            total += conv3(up_in, 2 * up_in, s.level + 1);
            if s.level > 0 {
                total += px(s.level) * (self.concat_width(i) * self.width(s.level)) as u64;
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
                .ok_or_else(|| Error::UnknownArchitecture(format!("this network needs `{key}`, which is missing")))
        };
        let mismatch = |key: String, expected: Vec<usize>, found: &[usize]| Error::ShapeMismatch {
            key,
            expected,
            found: found.to_vec(),
        };
        // Heads and feed-forward width of the block at `prefix` with `c` channels.
        let block_shape = |prefix: &str, c: usize| -> Result<(usize, usize)> {
            let key = format!("{prefix}.attn.temperature");
            let heads = match shape(&key)?.as_slice() {
                [h, 1, 1] if *h > 0 && c.is_multiple_of(*h) => *h,
                other => return Err(mismatch(key, vec![0, 1, 1], other)),
            };
            let key = format!("{prefix}.ffn.project_out.weight");
            match shape(&key)?.as_slice() {
                [out, h, 1, 1] if *out == c && *h > 0 => Ok((heads, *h)),
                other => Err(mismatch(key, vec![c, 0, 1, 1], other)),
            }
        };
        let dim = match shape("patch_embed.proj.weight")?.as_slice() {
            [d, c, 3, 3] if *c == IMAGE_CHANNELS && *d > 0 && d % 2 == 0 => *d,
            other => return Err(mismatch("patch_embed.proj.weight".into(), vec![0, IMAGE_CHANNELS, 3, 3], other)),
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
            (heads[level], hidden[level]) = block_shape(&format!("{group}.blocks.0"), dim << level)?;
        }
        if (2 * dim) % heads[0] != 0 {
            return Err(Error::UnknownArchitecture(format!(
                "{} heads do not split the {} channels of the full-resolution decoder",
                heads[0],
                2 * dim
            )));
        }
        let mut spec = RestormerSpec { dim, blocks, refinement, heads, hidden, prompts: None };
        // Any key of a prompt stage makes it a PromptIR (whose missing keys are then named).
        let prompt_groups = ["prompt", "noise_level", "reduce_noise_level"];
        if keys
            .iter()
            .any(|k| prompt_groups.iter().any(|g| k.strip_prefix(g).is_some_and(|r| r.starts_with(['1', '2', '3']))))
        {
            let mut prompts = [PromptStage { channels: 0, count: 0, size: 0, heads: 0, hidden: 0, out: 0 }; LEVELS - 1];
            for (i, stage) in prompts.iter_mut().enumerate() {
                let level = LEVELS - 1 - i;
                let key = format!("prompt{level}.prompt_param");
                let [count, channels, size] = match shape(&key)?.as_slice() {
                    [1, n, c, s, t] if n * c * s > 0 && s == t => [*n, *c, *s],
                    other => return Err(mismatch(key, vec![1, 0, 0, 0, 0], other)),
                };
                let width = spec.decoder_input(i) + channels;
                let (heads, hidden) = block_shape(&format!("noise_level{level}"), width)?;
                let key = format!("reduce_noise_level{level}.weight");
                let out = match shape(&key)?.as_slice() {
                    [out, c, 1, 1] if *c == width && *out > 0 && out % 2 == 0 => *out,
                    other => return Err(mismatch(key, vec![0, width, 1, 1], other)),
                };
                *stage = PromptStage { channels, count, size, heads, hidden, out };
            }
            spec.prompts = Some(prompts);
        }
        spec.validate(weights)?;
        Ok(spec)
    }

    /// Checks that `weights` holds exactly this architecture's keys with the right shapes.
    /// A classification head's keys are unexpected too: the library has none for a Restormer.
    pub fn validate(&self, weights: &WeightStore) -> Result<()> {
        super::check_exact_keys(weights, &self.expected_tensors(), self.name(), None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::weights::{Format, Tensor};
    use proptest::prelude::*;

    fn store_of(spec: &RestormerSpec) -> WeightStore {
        super::super::store_of(spec.expected_tensors())
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
            with_prompts in any::<bool>(),
        ) {
            let dim = 2 * half_dim;
            let heads = std::array::from_fn(|level| {
                // Heads divide the level's channels (and the full-resolution decoder's).
                let h = 1usize << head_powers[level];
                if (dim << level) % h == 0 && (level > 0 || (2 * dim) % h == 0) { h } else { 1 }
            });
            let hidden = std::array::from_fn(|i| (dim << i) * expansion + 1);
            let prompts = with_prompts.then(|| {
                std::array::from_fn(|i| PromptStage {
                    channels: 2 + i,
                    count: 1 + i,
                    size: 2 + i,
                    heads: 1,
                    hidden: 3 + i,
                    out: dim << (2 - i.min(1)),
                })
            });
            let spec = RestormerSpec { dim, blocks, refinement, heads, hidden, prompts };
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
            prompts: None,
        }
    }

    #[test]
    fn released_config_has_the_published_parameter_count() {
        let spec = released();
        assert_eq!(spec.param_count(), 26_126_644);
        assert_eq!(spec.expected_tensors().len(), 494);
    }

    /// The released PromptIR (`test_PromptIR_5d.yml`: the class defaults).
    fn released_promptir() -> RestormerSpec {
        let stage = |channels, size, hidden, out| PromptStage { channels, count: 5, size, heads: 4, hidden, out };
        RestormerSpec {
            prompts: Some([stage(320, 16, 1872, 192), stage(128, 32, 851, 192), stage(64, 64, 425, 96)]),
            ..released()
        }
    }

    #[test]
    fn released_promptir_has_the_published_parameter_count() {
        let spec = released_promptir();
        assert_eq!(spec.param_count(), 35_539_290);
        assert_eq!(spec.expected_tensors().len(), 830);
        assert_eq!(RestormerSpec::infer(&store_of(&spec)).unwrap(), spec);
        // torch FlopCounter: 345.4 GFLOPs at 256×256 (spec §7), prompt resizing not counted.
        let gmacs = spec.macs(256, 256) as f64 / 1e9;
        assert!((gmacs - 172.7).abs() < 1.0, "{gmacs}");
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
