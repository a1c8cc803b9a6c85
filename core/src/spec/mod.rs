//! Model spec: the network family and its hyper-parameters, inferred from a [`WeightStore`]'s
//! keys and shapes (no config file), and the strict validation of every key.
//!
//! The family carries its semantics: LayerNorm epsilon, how inputs are padded (reflect outside
//! the network for the MaskDCPT fork, zeros inside for upstream NAFNet) and the size multiple.
//! This module knows key names and shapes, not how to compute anything.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::weights::WeightStore;

pub mod restormer;
pub mod swinir;

pub use restormer::RestormerSpec;
pub use swinir::SwinirSpec;

/// Number of image channels every supported network takes and returns (RGB).
pub const IMAGE_CHANNELS: usize = 3;

/// Prefix of the degradation-classification head's tensors in files written by
/// `trainer export --with-classifier`; the restoration network ignores them.
pub const CLASSIFIER_PREFIX: &str = "classifier.";

/// A supported architecture family (state-dict layout plus its padding and LayerNorm rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `NAFNetBaseline` of the MaskDCPT BasicSR fork: keys `encoders.N.blocks.M`,
    /// `middle_blks.blocks.M`, `decoderN.blocks.M`; LayerNorm eps 1e-5; the harness
    /// reflect-pads (REFLECT_101) bottom/right to a multiple of 16.
    MaskDcpt,
    /// Upstream megvii NAFNet: keys `encoders.N.M`, `middle_blks.M`, `decoders.N.M`;
    /// LayerNorm eps 1e-6; the forward zero-pads bottom/right to a multiple of 2^levels.
    Nafnet,
}

/// How the input is padded up to the size multiple before the network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Mirror without repeating the edge pixel (PyTorch `reflect`, OpenCV REFLECT_101).
    Reflect,
    /// Zeros.
    Zero,
}

impl Family {
    /// Short stable name (`maskdcpt` or `nafnet`).
    pub fn name(self) -> &'static str {
        match self {
            Family::MaskDcpt => "maskdcpt",
            Family::Nafnet => "nafnet",
        }
    }

    /// LayerNorm epsilon of the family.
    pub fn layer_norm_eps(self) -> f32 {
        match self {
            Family::MaskDcpt => 1e-5,
            Family::Nafnet => 1e-6,
        }
    }

    /// Padding rule of the family.
    pub fn pad_mode(self) -> PadMode {
        match self {
            Family::MaskDcpt => PadMode::Reflect,
            Family::Nafnet => PadMode::Zero,
        }
    }

    /// Key prefix shared by the blocks of encoder `level` (ends with a dot).
    fn encoder_stage(self, level: usize) -> String {
        match self {
            Family::MaskDcpt => format!("encoders.{level}.blocks."),
            Family::Nafnet => format!("encoders.{level}."),
        }
    }

    /// Key prefix shared by the bottleneck blocks (ends with a dot).
    fn middle_stage(self) -> &'static str {
        match self {
            Family::MaskDcpt => "middle_blks.blocks.",
            Family::Nafnet => "middle_blks.",
        }
    }

    /// Key prefix shared by the blocks of decoder `stage` (ends with a dot).
    fn decoder_stage(self, stage: usize) -> String {
        match self {
            Family::MaskDcpt => format!("decoder{stage}.blocks."),
            Family::Nafnet => format!("decoders.{stage}."),
        }
    }
}

/// Hyper-parameters of a NAFNet-shaped network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Key layout and semantics.
    pub family: Family,
    /// Channels at full resolution (`intro` output).
    pub width: usize,
    /// NAFBlocks per encoder level, full resolution first.
    pub enc_blocks: Vec<usize>,
    /// NAFBlocks in the bottleneck.
    pub middle_blocks: usize,
    /// NAFBlocks per decoder stage, lowest resolution first (`decoder0` / `decoders.0`).
    pub dec_blocks: Vec<usize>,
}

/// Where a NAFBlock sits and how wide it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSite {
    /// Key prefix, e.g. `encoders.3.blocks.27`.
    pub prefix: String,
    /// Channels.
    pub channels: usize,
}

impl ModelSpec {
    /// Number of down-sampling levels.
    pub fn levels(&self) -> usize {
        self.enc_blocks.len()
    }

    /// Channels at `level` (0 = full resolution).
    pub fn channels_at(&self, level: usize) -> usize {
        self.width << level
    }

    /// Height and width of the network input must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        let network = 1usize << self.levels();
        match self.family {
            // The MaskDCPT harness pads to `window_size` = 16 regardless of depth; deeper
            // variants need at least 2^levels to run at all.
            Family::MaskDcpt => network.max(16),
            Family::Nafnet => network,
        }
    }

    /// Key prefix of encoder block `block` at `level`.
    pub fn encoder_block(&self, level: usize, block: usize) -> BlockSite {
        BlockSite { prefix: format!("{}{block}", self.family.encoder_stage(level)), channels: self.channels_at(level) }
    }

    /// Key prefix of bottleneck block `block`.
    pub fn middle_block(&self, block: usize) -> BlockSite {
        BlockSite {
            prefix: format!("{}{block}", self.family.middle_stage()),
            channels: self.channels_at(self.levels()),
        }
    }

    /// Key prefix of decoder block `block` of `stage` (stage 0 is the lowest resolution).
    pub fn decoder_block(&self, stage: usize, block: usize) -> BlockSite {
        let level = self.levels() - 1 - stage;
        BlockSite { prefix: format!("{}{block}", self.family.decoder_stage(stage)), channels: self.channels_at(level) }
    }

    /// Every state-dict key of this architecture with its shape, in network order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let w = self.width;
        let mut out =
            vec![("intro.weight".to_owned(), vec![w, IMAGE_CHANNELS, 3, 3]), ("intro.bias".to_owned(), vec![w])];
        for level in 0..self.levels() {
            for b in 0..self.enc_blocks[level] {
                push_block(&mut out, &self.encoder_block(level, b));
            }
            let c = self.channels_at(level);
            out.push((format!("downs.{level}.weight"), vec![2 * c, c, 2, 2]));
            out.push((format!("downs.{level}.bias"), vec![2 * c]));
        }
        for b in 0..self.middle_blocks {
            push_block(&mut out, &self.middle_block(b));
        }
        for stage in 0..self.levels() {
            let c = self.channels_at(self.levels() - stage);
            out.push((format!("ups.{stage}.0.weight"), vec![2 * c, c, 1, 1]));
            for b in 0..self.dec_blocks[stage] {
                push_block(&mut out, &self.decoder_block(stage, b));
            }
        }
        out.push(("ending.weight".to_owned(), vec![IMAGE_CHANNELS, w, 3, 3]));
        out.push(("ending.bias".to_owned(), vec![IMAGE_CHANNELS]));
        out
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        count_params(&self.expected_tensors())
    }

    /// Multiply-accumulates of one forward pass on a `height`×`width` (padded) input.
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let px = |level: usize| ((height >> level) * (width >> level)) as u64;
        let block = |c: u64, level: usize| {
            // conv1, conv4 (c→2c), conv3, conv5 (c→c), depthwise 3×3 on 2c; SCA c×c once.
            px(level) * (6 * c * c + 9 * 2 * c) + c * c
        };
        let w = self.width as u64;
        let mut total = px(0) * 2 * 9 * IMAGE_CHANNELS as u64 * w; // intro + ending
        for level in 0..self.levels() {
            let c = w << level;
            total += self.enc_blocks[level] as u64 * block(c, level);
            // down: 2×2/2 conv c→2c; up: 1×1 conv 2c→4c at the lower resolution.
            total += 2 * px(level + 1) * (2 * c) * (4 * c);
            let stage = self.levels() - 1 - level;
            total += self.dec_blocks[stage] as u64 * block(c, level);
        }
        total += self.middle_blocks as u64 * block(w << self.levels(), self.levels());
        total
    }

    /// Infers family and hyper-parameters from the keys and shapes of `weights`, then validates
    /// every key (nothing missing, nothing extra, every shape right).
    pub fn infer(weights: &WeightStore) -> Result<Self> {
        let family = detect_family(weights)?;
        let intro = weights
            .get("intro.weight")
            .ok_or_else(|| Error::MissingKey { key: "intro.weight".into(), expected: vec![0, IMAGE_CHANNELS, 3, 3] })?;
        let width = match intro.shape() {
            [w, c, 3, 3] if *c == IMAGE_CHANNELS && *w > 0 => *w,
            other => {
                return Err(Error::ShapeMismatch {
                    key: "intro.weight".into(),
                    expected: vec![0, IMAGE_CHANNELS, 3, 3],
                    found: other.to_vec(),
                });
            }
        };
        let keys: Vec<&str> = weights.iter().map(|(k, _)| k).collect();
        let levels = count_indices(&keys, "downs.");
        if levels == 0 {
            return Err(Error::UnknownArchitecture("no `downs.N.weight` keys: not a NAFNet".into()));
        }
        if levels > 8 {
            return Err(Error::UnknownArchitecture(format!("{levels} down-sampling levels is implausible")));
        }
        let enc_blocks = (0..levels).map(|l| count_indices(&keys, &family.encoder_stage(l))).collect();
        let middle_blocks = count_indices(&keys, family.middle_stage());
        let dec_blocks = (0..levels).map(|s| count_indices(&keys, &family.decoder_stage(s))).collect();
        let spec = ModelSpec { family, width, enc_blocks, middle_blocks, dec_blocks };
        spec.validate(weights)?;
        Ok(spec)
    }

    /// Checks that `weights` holds exactly this architecture's keys with the right shapes
    /// (keys under [`CLASSIFIER_PREFIX`] belong to the classification head and are not checked here).
    pub fn validate(&self, weights: &WeightStore) -> Result<()> {
        check_exact_keys(weights, &self.expected_tensors(), self.family.name(), Some(CLASSIFIER_PREFIX))
    }
}

/// A recognised network: a NAFNet of either layout, or one of the fork's transformers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Architecture {
    /// NAFNet: the fork's `NAFNetBaseline` or upstream NAFNet ([`Family`]).
    Nafnet(ModelSpec),
    /// The fork's `Restormer` or `PromptIR` (run on the CPU engine).
    Restormer(RestormerSpec),
    /// The fork's `SwinIR` (run on the CPU engine).
    Swinir(SwinirSpec),
}

impl Architecture {
    /// Recognises the network of `weights` from its keys, infers its hyper-parameters and
    /// validates every key.
    pub fn infer(weights: &WeightStore) -> Result<Self> {
        let has = |key: &str| weights.get(key).is_some();
        if has("conv_first.weight") {
            return SwinirSpec::infer(weights).map(Architecture::Swinir);
        }
        if has("patch_embed.proj.weight") {
            return RestormerSpec::infer(weights).map(Architecture::Restormer);
        }
        ModelSpec::infer(weights).map(Architecture::Nafnet)
    }

    /// Short stable name: the NAFNet family's (`maskdcpt`, `nafnet`), `restormer`, `promptir`
    /// or `swinir`.
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Nafnet(spec) => spec.family.name(),
            Architecture::Restormer(spec) => spec.name(),
            Architecture::Swinir(_) => "swinir",
        }
    }

    /// Height and width of the network input must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        match self {
            Architecture::Nafnet(spec) => spec.size_multiple(),
            Architecture::Restormer(_) => restormer::SIZE_MULTIPLE,
            Architecture::Swinir(spec) => spec.window,
        }
    }

    /// How inputs are padded up to the size multiple.
    pub fn pad_mode(&self) -> PadMode {
        match self {
            Architecture::Nafnet(spec) => spec.family.pad_mode(),
            Architecture::Restormer(_) | Architecture::Swinir(_) => PadMode::Reflect,
        }
    }

    /// Every state-dict key with its shape, in network order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        match self {
            Architecture::Nafnet(spec) => spec.expected_tensors(),
            Architecture::Restormer(spec) => spec.expected_tensors(),
            Architecture::Swinir(spec) => spec.expected_tensors(),
        }
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        count_params(&self.expected_tensors())
    }

    /// Multiply-accumulates of one forward pass on a `height × width` (padded) input.
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        match self {
            Architecture::Nafnet(spec) => spec.macs(height, width),
            Architecture::Restormer(spec) => spec.macs(height, width),
            Architecture::Swinir(spec) => spec.macs(height, width),
        }
    }

    /// The NAFNet spec, or an error saying that `user` (e.g. "the CUDA engine") runs NAFNet
    /// networks only.
    pub fn nafnet(&self, user: &str) -> Result<&ModelSpec> {
        match self {
            Architecture::Nafnet(spec) => Ok(spec),
            other => Err(Error::Unsupported(format!(
                "{user} runs NAFNet networks only, and this model is a `{}` network, which the CPU engine runs \
                 (CLI: `--backend cpu`; C: options.backend = MASKDCPT_BACKEND_CPU)",
                other.name()
            ))),
        }
    }
}

/// A store holding every `(key, shape)` of `expected`, each value 0.5 (spec tests).
#[cfg(test)]
pub(crate) fn store_of(expected: Vec<(String, Vec<usize>)>) -> WeightStore {
    use crate::weights::{Format, Tensor};
    let tensors = expected
        .into_iter()
        .map(|(key, shape)| {
            let n = shape.iter().product();
            (key, Tensor::from_f32(shape, &vec![0.5; n]).unwrap())
        })
        .collect();
    WeightStore::new(tensors, Format::Safetensors, None)
}

/// Number of values in `tensors` (key, shape) pairs.
fn count_params(tensors: &[(String, Vec<usize>)]) -> usize {
    tensors.iter().map(|(_, shape)| shape.iter().product::<usize>()).sum()
}

/// Checks that `weights` holds exactly the `expected` keys of a `family` network with their
/// shapes, besides keys under `ignored` (another part's, checked elsewhere).
fn check_exact_keys(
    weights: &WeightStore,
    expected: &[(String, Vec<usize>)],
    family: &'static str,
    ignored: Option<&str>,
) -> Result<()> {
    let expected_keys: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    for (key, tensor) in weights.iter() {
        if !expected_keys.contains(key) && !ignored.is_some_and(|prefix| key.starts_with(prefix)) {
            return Err(Error::UnexpectedKey { key: key.to_owned(), shape: tensor.shape().to_vec(), family });
        }
    }
    for (key, shape) in expected {
        let tensor = weights.get(key).ok_or_else(|| Error::MissingKey { key: key.clone(), expected: shape.clone() })?;
        if tensor.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                key: key.clone(),
                expected: shape.clone(),
                found: tensor.shape().to_vec(),
            });
        }
    }
    Ok(())
}

fn push_block(out: &mut Vec<(String, Vec<usize>)>, site: &BlockSite) {
    let (p, c) = (&site.prefix, site.channels);
    let entries: [(&str, Vec<usize>); 18] = [
        ("beta", vec![1, c, 1, 1]),
        ("gamma", vec![1, c, 1, 1]),
        ("conv1.weight", vec![2 * c, c, 1, 1]),
        ("conv1.bias", vec![2 * c]),
        ("conv2.weight", vec![2 * c, 1, 3, 3]),
        ("conv2.bias", vec![2 * c]),
        ("conv3.weight", vec![c, c, 1, 1]),
        ("conv3.bias", vec![c]),
        ("sca.1.weight", vec![c, c, 1, 1]),
        ("sca.1.bias", vec![c]),
        ("conv4.weight", vec![2 * c, c, 1, 1]),
        ("conv4.bias", vec![2 * c]),
        ("conv5.weight", vec![c, c, 1, 1]),
        ("conv5.bias", vec![c]),
        ("norm1.weight", vec![c]),
        ("norm1.bias", vec![c]),
        ("norm2.weight", vec![c]),
        ("norm2.bias", vec![c]),
    ];
    for (suffix, shape) in entries {
        out.push((format!("{p}.{suffix}"), shape));
    }
}

/// Tells the two layouts apart by their NAFBlock keys (every block group counts: encoders,
/// bottleneck and decoders).
fn detect_family(weights: &WeightStore) -> Result<Family> {
    let seen = |family: Family| weights.iter().any(|(k, _)| block_layout(k) == Some(family));
    match (seen(Family::MaskDcpt), seen(Family::Nafnet)) {
        (true, false) => Ok(Family::MaskDcpt),
        (false, true) => Ok(Family::Nafnet),
        (true, true) => {
            Err(Error::UnknownArchitecture("keys mix the MaskDCPT (`.blocks.`) and upstream NAFNet layouts".into()))
        }
        (false, false) => {
            let sample: Vec<&str> = weights.iter().map(|(k, _)| k).take(5).collect();
            Err(Error::UnknownArchitecture(format!(
                "no NAFBlock keys of the MaskDCPT layout (`encoders.0.blocks.0.*`, `middle_blks.blocks.0.*`, \
                 `decoder0.blocks.0.*`) or of upstream NAFNet (`encoders.0.0.*`, `middle_blks.0.*`, \
                 `decoders.0.0.*`); a network without blocks is either and runs differently in each; \
                 first keys: {sample:?}"
            )))
        }
    }
}

/// The layout of a NAFBlock key: MaskDCPT for `encoders.N.blocks.M.…`, `middle_blks.blocks.M.…`
/// and `decoderN.blocks.M.…`; upstream NAFNet for `encoders.N.M.…`, `middle_blks.M.…` and
/// `decoders.N.M.…`; `None` for the other keys.
fn block_layout(key: &str) -> Option<Family> {
    let is_index = |part: &str| part.parse::<usize>().is_ok();
    let mut parts = key.split('.');
    let group = parts.next()?;
    let indexed_group = group == "encoders" || group == "decoders";
    let named_stage = group.strip_prefix("decoder").is_some_and(is_index);
    if !(indexed_group || named_stage || group == "middle_blks") {
        return None;
    }
    if indexed_group && !is_index(parts.next()?) {
        return None;
    }
    match parts.next()? {
        "blocks" if !indexed_group || group == "encoders" => Some(Family::MaskDcpt),
        block if is_index(block) && !named_stage => Some(Family::Nafnet),
        _ => None,
    }
}

/// Number of distinct indices `N` in keys `{prefix}N.…` (max index + 1; gaps are
/// reported later as missing keys).
fn count_indices(keys: &[&str], prefix: &str) -> usize {
    let indices: BTreeMap<usize, ()> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next())
        .filter_map(|idx| idx.parse::<usize>().ok())
        .filter(|&i| i < 4096)
        .map(|i| (i, ()))
        .collect();
    indices.keys().next_back().map_or(0, |&m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released() -> ModelSpec {
        ModelSpec {
            family: Family::MaskDcpt,
            width: 64,
            enc_blocks: vec![1, 1, 1, 28],
            middle_blocks: 1,
            dec_blocks: vec![1, 1, 1, 1],
        }
    }

    #[test]
    fn released_config_has_the_published_parameter_count() {
        let spec = released();
        assert_eq!(spec.param_count(), 67_888_835);
        assert_eq!(spec.expected_tensors().len(), 664);
        assert_eq!(spec.size_multiple(), 16);
    }

    #[test]
    fn released_config_macs_match_flop_counter() {
        // torch FlopCounter: 126.1 GFLOPs at 256×256 (spec §7) = 63.05 GMACs.
        let gmacs = released().macs(256, 256) as f64 / 1e9;
        assert!((gmacs - 63.05).abs() < 0.1, "{gmacs}");
    }

    #[test]
    fn upstream_layout_pads_to_power_of_levels() {
        let spec = ModelSpec {
            family: Family::Nafnet,
            width: 8,
            enc_blocks: vec![1, 1, 2],
            middle_blocks: 2,
            dec_blocks: vec![1, 1, 1],
        };
        assert_eq!(spec.size_multiple(), 8);
        assert!(spec.expected_tensors().iter().any(|(k, _)| k == "decoders.2.0.conv5.bias"));
        assert!(spec.expected_tensors().iter().any(|(k, _)| k == "middle_blks.1.beta"));
    }

    /// Every block key of either layout names its layout, whichever group it is in; the
    /// other keys (and the other layout's look-alikes) name none.
    #[test]
    fn block_keys_name_their_layout() {
        for family in [Family::MaskDcpt, Family::Nafnet] {
            let spec = ModelSpec { family, width: 8, enc_blocks: vec![1, 2], middle_blocks: 1, dec_blocks: vec![2, 1] };
            for (key, _) in spec.expected_tensors() {
                let outside = ["intro.", "ending.", "downs.", "ups."].iter().any(|p| key.starts_with(p));
                let want = (!outside).then_some(family);
                assert_eq!(block_layout(&key), want, "{key}");
            }
        }
        for other in ["decoders.0.blocks.0.beta", "decoder0.0.beta", "encoders.x.0.beta", "ups.0.0.weight", "decoder"] {
            assert_eq!(block_layout(other), None, "{other}");
        }
    }
}
