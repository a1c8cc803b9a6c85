//! The `SwinIR` class of the MaskDCPT BasicSR fork (`swinir_maskdcpt_5d.pth`): its
//! hyper-parameters inferred from keys and shapes, and every key it must have.
//!
//! `conv_first` (3×3, image → `embed_dim`) on the input minus the RGB mean, the pixels as
//! tokens: `patch_embed.norm`, residual groups of Swin blocks (each group: its blocks, a 3×3
//! conv, plus the group's input), `norm`, `conv_after_body` plus the `conv_first` output,
//! `conv_last` (3×3 → image) plus the mean-shifted input, plus the mean. A Swin block is
//! `x += proj(window attention(LN1(x)))`, `x += fc2(GELU(fc1(LN2(x))))`; the fork's attention has
//! no relative position bias and its shifted windows no mask: odd blocks roll the map by half a
//! window up and left, attend within windows (tokens wrapped around the edges attend to each
//! other) and roll back. The groups are stored as `encode_layers.i` and then `decode_layersi`.
//!
//! Two hyper-parameters are not in the weights: the heads and the window size. They come from
//! the safetensors metadata ([`HEADS_METADATA`], [`WINDOW_METADATA`]) when a file has them,
//! else from the fork's defaults, which the released checkpoint uses (6 heads, windows of 8).
//! The harness reflect-pads bottom/right to a multiple of the window.

use super::{IMAGE_CHANNELS, count_indices};
use crate::error::{Error, Result};
use crate::weights::WeightStore;

/// Metadata key of the heads: one count for every group, or one per group, comma-separated.
pub const HEADS_METADATA: &str = "swinir.num_heads";

/// Metadata key of the window side.
pub const WINDOW_METADATA: &str = "swinir.window_size";

/// Heads of every group when the file does not say (the fork's default and released config).
pub const DEFAULT_HEADS: usize = 6;

/// Window side when the file does not say (the fork's default and released config).
pub const DEFAULT_WINDOW: usize = 8;

/// The fork's blocks attend within windows only while the training image size (128, the
/// default `img_size`) exceeds the window; larger windows change the network.
const MAX_WINDOW: usize = 127;

/// LayerNorm epsilon (`nn.LayerNorm` default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// The RGB mean subtracted from the input and added back to the output.
pub const RGB_MEAN: [f32; IMAGE_CHANNELS] = [0.4488, 0.4371, 0.4040];

/// Hyper-parameters of a SwinIR network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwinirSpec {
    /// Channels of the tokens (`embed_dim`).
    pub embed_dim: usize,
    /// Swin blocks per residual group, in network order.
    pub depths: Vec<usize>,
    /// How many of the groups are stored as `encode_layers.i` (the rest as `decode_layersi`).
    pub encode_layers: usize,
    /// Attention heads per group.
    pub heads: Vec<usize>,
    /// Side of the attention windows; odd blocks shift them by half of it.
    pub window: usize,
    /// Hidden channels of the blocks' MLPs.
    pub mlp_hidden: usize,
    /// Whether the blocks' qkv projection has a bias.
    pub qkv_bias: bool,
    /// Whether the embedded tokens are normalised (`patch_embed.norm`).
    pub patch_norm: bool,
}

impl SwinirSpec {
    /// Key prefix of residual group `i`: `encode_layers.i` or `decode_layersj`.
    pub fn group_prefix(&self, i: usize) -> String {
        if i < self.encode_layers {
            format!("encode_layers.{i}")
        } else {
            format!("decode_layers{}", i - self.encode_layers)
        }
    }

    /// Key prefix of block `j` of group `i`.
    pub fn block_prefix(&self, i: usize, j: usize) -> String {
        format!("{}.residual_group.blocks.{j}", self.group_prefix(i))
    }

    /// How far block `j` of a group rolls the map before its window attention.
    pub fn shift(&self, j: usize) -> usize {
        if j % 2 == 1 { self.window / 2 } else { 0 }
    }

    /// Every state-dict key with its shape, in network order.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (e, hidden) = (self.embed_dim, self.mlp_hidden);
        let conv = |key: &str, cout: usize, cin: usize| {
            [(format!("{key}.weight"), vec![cout, cin, 3, 3]), (format!("{key}.bias"), vec![cout])]
        };
        let norm = |key: &str| [(format!("{key}.weight"), vec![e]), (format!("{key}.bias"), vec![e])];
        let mut out: Vec<(String, Vec<usize>)> = conv("conv_first", e, IMAGE_CHANNELS).into();
        if self.patch_norm {
            out.extend(norm("patch_embed.norm"));
        }
        for (i, &depth) in self.depths.iter().enumerate() {
            for j in 0..depth {
                let p = self.block_prefix(i, j);
                out.extend(norm(&format!("{p}.norm1")));
                out.push((format!("{p}.attn.qkv.weight"), vec![3 * e, e]));
                if self.qkv_bias {
                    out.push((format!("{p}.attn.qkv.bias"), vec![3 * e]));
                }
                let linears = [("attn.proj", e, e), ("mlp.fc1", hidden, e), ("mlp.fc2", e, hidden)];
                let norm2 = norm(&format!("{p}.norm2"));
                for (k, (name, rows, cols)) in linears.into_iter().enumerate() {
                    if k == 1 {
                        out.extend(norm2.clone());
                    }
                    out.push((format!("{p}.{name}.weight"), vec![rows, cols]));
                    out.push((format!("{p}.{name}.bias"), vec![rows]));
                }
            }
            out.extend(conv(&format!("{}.conv", self.group_prefix(i)), e, e));
        }
        out.extend(norm("norm"));
        out.extend(conv("conv_after_body", e, e));
        out.extend(conv("conv_last", IMAGE_CHANNELS, e));
        out
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        super::count_params(&self.expected_tensors())
    }

    /// Multiply-accumulates of one forward pass on a `height × width` (padded) input, the
    /// attention's two products included.
    pub fn macs(&self, height: usize, width: usize) -> u64 {
        let (e, hidden, tokens) = (self.embed_dim as u64, self.mlp_hidden as u64, (self.window * self.window) as u64);
        let conv3 = |cin: u64, cout: u64| 9 * cin * cout;
        // qkv, q·kᵀ and attn·v over a window, proj, fc1, fc2.
        let block = 3 * e * e + 2 * tokens * e + e * e + 2 * e * hidden;
        let blocks: u64 = self.depths.iter().map(|&d| d as u64).sum();
        let per_pixel =
            2 * conv3(IMAGE_CHANNELS as u64, e) + blocks * block + (self.depths.len() as u64 + 1) * conv3(e, e);
        (height * width) as u64 * per_pixel
    }

    /// Infers the hyper-parameters from `weights` (which hold `conv_first.weight`) and their
    /// metadata, and validates every key.
    pub fn infer(weights: &WeightStore) -> Result<Self> {
        refuse_other_swinirs(weights)?;
        let shape = |key: &str| -> Result<Vec<usize>> {
            weights
                .get(key)
                .map(|t| t.shape().to_vec())
                .ok_or_else(|| Error::UnknownArchitecture(format!("a SwinIR needs `{key}`, which is missing")))
        };
        let mismatch = |key: &str, expected: Vec<usize>, found: &[usize]| Error::ShapeMismatch {
            key: key.to_owned(),
            expected,
            found: found.to_vec(),
        };
        let embed_dim = match shape("conv_first.weight")?.as_slice() {
            [e, c, 3, 3] if *c == IMAGE_CHANNELS && *e > 0 => *e,
            other => return Err(mismatch("conv_first.weight", vec![0, IMAGE_CHANNELS, 3, 3], other)),
        };
        let keys: Vec<&str> = weights.iter().map(|(k, _)| k).collect();
        let encode_layers = count_indices(&keys, "encode_layers.");
        let decode_layers =
            (0usize..).take_while(|i| keys.iter().any(|k| k.starts_with(&format!("decode_layers{i}.")))).count();
        let mut spec = SwinirSpec {
            embed_dim,
            depths: vec![0; encode_layers + decode_layers],
            encode_layers,
            heads: Vec::new(),
            window: DEFAULT_WINDOW,
            mlp_hidden: 0,
            // Either key of an optional part makes it expected (the other is then named if missing).
            qkv_bias: keys.iter().any(|k| k.ends_with(".attn.qkv.bias")),
            patch_norm: keys.iter().any(|k| k.starts_with("patch_embed.norm.")),
        };
        for i in 0..spec.depths.len() {
            spec.depths[i] = count_indices(&keys, &format!("{}.residual_group.blocks.", spec.group_prefix(i)));
        }
        if spec.depths.first().is_none_or(|&d| d == 0) {
            return Err(Error::UnknownArchitecture(format!(
                "a SwinIR's first residual group has no blocks (`{}.*`): its MLP width cannot be known",
                SwinirSpec::first_block()
            )));
        }
        let fc1 = format!("{}.mlp.fc1.weight", SwinirSpec::first_block());
        spec.mlp_hidden = match shape(&fc1)?.as_slice() {
            [hidden, e] if *e == embed_dim && *hidden > 0 => *hidden,
            other => return Err(mismatch(&fc1, vec![0, embed_dim], other)),
        };
        spec.window = window_of(weights)?;
        spec.heads = heads_of(weights, embed_dim, spec.depths.len())?;
        spec.validate(weights)?;
        Ok(spec)
    }

    fn first_block() -> &'static str {
        "encode_layers.0.residual_group.blocks.0"
    }

    /// Checks that `weights` holds exactly this architecture's keys with the right shapes.
    pub fn validate(&self, weights: &WeightStore) -> Result<()> {
        super::check_exact_keys(weights, &self.expected_tensors(), "swinir", None)
    }
}

/// Names the SwinIR variants whose weights look alike but compute something else.
fn refuse_other_swinirs(weights: &WeightStore) -> Result<()> {
    let variants = [
        ("relative_position_bias_table", "an upstream SwinIR (its attention has relative position biases)"),
        ("layers.0.", "an upstream SwinIR (groups under `layers.N`)"),
        ("conv_before_upsample", "a super-resolution SwinIR (an upsampler)"),
        ("upsample.", "a super-resolution SwinIR (an upsampler)"),
        ("absolute_pos_embed", "a SwinIR with absolute position embeddings (a fixed image size)"),
        ("conv_after_body.0.", "a SwinIR with the `3conv` residual connection"),
    ];
    for (key, _) in weights.iter() {
        if let Some((_, what)) =
            variants.iter().find(|(part, _)| key.starts_with(part) || key.contains(&format!(".{part}")))
        {
            return Err(Error::UnknownArchitecture(format!(
                "this is {what} checkpoint (it has `{key}`); maskdcpt runs the MaskDCPT fork's SwinIR: \
                 restoration (upscale 1), no position biases, one conv per residual connection"
            )));
        }
    }
    Ok(())
}

/// The window side: [`WINDOW_METADATA`] or [`DEFAULT_WINDOW`].
fn window_of(weights: &WeightStore) -> Result<usize> {
    let Some(text) = weights.metadata(WINDOW_METADATA) else { return Ok(DEFAULT_WINDOW) };
    match text.trim().parse::<usize>() {
        Ok(window) if (1..=MAX_WINDOW).contains(&window) => Ok(window),
        _ => Err(Error::InvalidArgument(format!(
            "metadata `{WINDOW_METADATA}` is `{text}`; it must be a window side from 1 to {MAX_WINDOW}"
        ))),
    }
}

/// The heads of each of `groups` groups: [`HEADS_METADATA`] or [`DEFAULT_HEADS`] each.
fn heads_of(weights: &WeightStore, embed_dim: usize, groups: usize) -> Result<Vec<usize>> {
    let heads = match weights.metadata(HEADS_METADATA) {
        None => vec![DEFAULT_HEADS; groups],
        Some(text) => {
            let parsed: Option<Vec<usize>> = text.split(',').map(|h| h.trim().parse().ok()).collect();
            match parsed {
                Some(list) if list.len() == 1 => vec![list[0]; groups],
                Some(list) if list.len() == groups => list,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "metadata `{HEADS_METADATA}` is `{text}`; it must be one head count, or {groups} \
                         comma-separated (one per residual group)"
                    )));
                }
            }
        }
    };
    if let Some(bad) = heads.iter().find(|&&h| h == 0 || !embed_dim.is_multiple_of(h)) {
        let source = if weights.metadata(HEADS_METADATA).is_some() {
            format!("metadata `{HEADS_METADATA}`")
        } else {
            format!("the default (no `{HEADS_METADATA}` metadata)")
        };
        return Err(Error::InvalidArgument(format!(
            "{bad} heads ({source}) do not split the {embed_dim} token channels; write the heads the network was \
             trained with into the safetensors metadata `{HEADS_METADATA}`"
        )));
    }
    Ok(heads)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::weights::{Format, Tensor};
    use proptest::prelude::*;

    fn store_of(spec: &SwinirSpec) -> WeightStore {
        let metadata = BTreeMap::from([
            (HEADS_METADATA.to_owned(), spec.heads.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(",")),
            (WINDOW_METADATA.to_owned(), spec.window.to_string()),
        ]);
        super::super::store_of(spec.expected_tensors()).with_metadata(metadata)
    }

    /// The released configuration (`test_SwinIR_5d.yml`).
    pub fn released() -> SwinirSpec {
        SwinirSpec {
            embed_dim: 180,
            depths: vec![6; 6],
            encode_layers: 3,
            heads: vec![6; 6],
            window: 8,
            mlp_hidden: 360,
            qkv_bias: true,
            patch_norm: true,
        }
    }

    proptest! {
        /// Any configuration is read back from its keys and metadata; dropping or renaming a key
        /// is an error that names it.
        #[test]
        fn any_configuration_is_read_back_from_its_keys(
            head_dim in 1usize..5,
            heads in proptest::collection::vec(1usize..4, 1..5),
            encode_layers in 1usize..3,
            depth in 1usize..4,
            window in 1usize..10,
            mlp_hidden in 1usize..20,
            qkv_bias in any::<bool>(),
            patch_norm in any::<bool>(),
            drop in any::<prop::sample::Index>(),
        ) {
            let embed_dim = head_dim * 12;
            let groups = heads.len().max(encode_layers);
            let heads: Vec<usize> = (0..groups).map(|i| heads.get(i).copied().unwrap_or(1)).collect();
            let depths = (0..groups).map(|i| depth + i % 2).collect();
            let spec = SwinirSpec { embed_dim, depths, encode_layers, heads, window, mlp_hidden, qkv_bias, patch_norm };
            let store = store_of(&spec);
            prop_assert_eq!(SwinirSpec::infer(&store).unwrap(), spec.clone());
            let expected = spec.expected_tensors();
            let (key, _) = &expected[drop.index(expected.len())];
            let mut tensors: BTreeMap<String, Tensor> = store.iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
            let tensor = tensors.remove(key).unwrap();
            let metadata = BTreeMap::from([(HEADS_METADATA.to_owned(), "1".to_owned())]);
            let missing = WeightStore::new(tensors.clone(), Format::Safetensors, None).with_metadata(metadata);
            let only_bias = key.ends_with("attn.qkv.bias") && spec.depths.iter().sum::<usize>() == 1;
            match SwinirSpec::infer(&missing) {
                // The only qkv bias dropped: a network without one.
                Ok(read) => prop_assert!(only_bias && !read.qkv_bias, "{} dropped, yet read back", key),
                Err(err) => prop_assert!(err.to_string().contains(key.as_str()), "{}", err),
            }
            tensors.insert(format!("{key}.extra"), tensor);
            let renamed = WeightStore::new(tensors, Format::Safetensors, None);
            prop_assert!(SwinirSpec::infer(&renamed).is_err());
        }
    }

    #[test]
    fn released_config_has_the_published_parameter_count() {
        let spec = released();
        assert_eq!(spec.param_count(), 11_455_563);
        assert_eq!(spec.expected_tensors().len(), 454);
        // Without metadata the fork's defaults apply.
        let plain = WeightStore::new(
            store_of(&spec).iter().map(|(k, t)| (k.to_owned(), t.clone())).collect(),
            Format::Safetensors,
            None,
        );
        assert_eq!(SwinirSpec::infer(&plain).unwrap(), spec);
    }

    #[test]
    fn released_config_macs_match_flop_counter() {
        // Spec §7: 1600.6 GFLOPs at 256×256.
        let gmacs = released().macs(256, 256) as f64 / 1e9;
        assert!((gmacs - 800.3).abs() < 0.1, "{gmacs}");
    }

    #[test]
    fn heads_and_window_metadata_are_checked() {
        let spec = released();
        let with = |key: &str, value: &str| {
            let store = store_of(&spec);
            let tensors = store.iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
            let metadata = BTreeMap::from([(key.to_owned(), value.to_owned())]);
            SwinirSpec::infer(&WeightStore::new(tensors, Format::Safetensors, None).with_metadata(metadata))
        };
        assert_eq!(with(HEADS_METADATA, "4").unwrap().heads, vec![4; 6]);
        assert_eq!(with(WINDOW_METADATA, "16").unwrap().window, 16);
        for (key, value, needle) in [
            (HEADS_METADATA, "7", "do not split the 180"),
            (HEADS_METADATA, "6,6", "one per residual group"),
            (HEADS_METADATA, "six", "one head count"),
            (WINDOW_METADATA, "0", "from 1 to 127"),
            (WINDOW_METADATA, "128", "from 1 to 127"),
        ] {
            let err = with(key, value).unwrap_err().to_string();
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
    }

    #[test]
    fn other_swinirs_are_named() {
        let spec = released();
        for (extra, needle) in [
            ("encode_layers.0.residual_group.blocks.0.attn.relative_position_bias_table", "position biases"),
            ("upsample.0.weight", "super-resolution"),
            ("conv_after_body.0.weight", "3conv"),
        ] {
            let mut tensors: BTreeMap<String, Tensor> =
                store_of(&spec).iter().map(|(k, t)| (k.to_owned(), t.clone())).collect();
            tensors.insert(extra.to_owned(), Tensor::from_f32(vec![1], &[0.0]).unwrap());
            let err = SwinirSpec::infer(&WeightStore::new(tensors, Format::Safetensors, None)).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
