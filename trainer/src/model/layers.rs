//! The layers both networks are built from: 2-D convolution, channel LayerNorm and linear.

use tch::Tensor;

use crate::params::{Init, ParamBuilder, ParamId, ParamSet};

/// A 2-D convolution (weight `[out, in/groups, k, k]`, optional bias).
pub struct Conv {
    weight: ParamId,
    bias: Option<ParamId>,
    stride: i64,
    padding: i64,
    groups: i64,
}

/// How a convolution's parameters are initialised.
#[derive(Debug, Clone, Copy)]
pub enum ConvInit {
    /// PyTorch's default (`kaiming_uniform_(a=√5)`): weight and bias U(±1/√fan_in).
    TorchDefault,
    /// Kaiming normal, fan-out, ReLU gain (fvcore `c2_msra_fill`), no bias.
    MsraFanOut,
}

/// Shape of a convolution.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    /// Input channels.
    pub input: i64,
    /// Output channels.
    pub output: i64,
    /// Square kernel size.
    pub kernel: i64,
    /// Stride.
    pub stride: i64,
    /// Zero padding on every side.
    pub padding: i64,
    /// Channel groups (input = groups for depthwise).
    pub groups: i64,
    /// Whether it has a bias.
    pub bias: bool,
}

impl ConvShape {
    /// A stride-1 convolution padded to keep the size ("same").
    pub fn same(input: i64, output: i64, kernel: i64) -> Self {
        Self { input, output, kernel, stride: 1, padding: kernel / 2, groups: 1, bias: true }
    }
}

impl Conv {
    /// Declares `{prefix}.weight` (and `{prefix}.bias`).
    pub fn new(params: &mut ParamBuilder, prefix: &str, shape: ConvShape, init: ConvInit) -> Self {
        let fan_in = shape.input / shape.groups * shape.kernel * shape.kernel;
        let weight_init = match init {
            ConvInit::TorchDefault => Init::Uniform(1.0 / (fan_in as f64).sqrt()),
            ConvInit::MsraFanOut => Init::Normal((2.0 / (shape.output * shape.kernel * shape.kernel) as f64).sqrt()),
        };
        let weight = params.add(
            format!("{prefix}.weight"),
            &[shape.output, shape.input / shape.groups, shape.kernel, shape.kernel],
            weight_init,
        );
        let bias = shape.bias.then(|| {
            let bias_init = match init {
                ConvInit::TorchDefault => Init::Uniform(1.0 / (fan_in as f64).sqrt()),
                ConvInit::MsraFanOut => Init::Zeros,
            };
            params.add(format!("{prefix}.bias"), &[shape.output], bias_init)
        });
        Self { weight, bias, stride: shape.stride, padding: shape.padding, groups: shape.groups }
    }

    /// Applies the convolution.
    pub fn forward(&self, params: &ParamSet, x: &Tensor) -> Tensor {
        x.conv2d(
            params.get(self.weight),
            self.bias.map(|b| params.get(b)),
            [self.stride, self.stride],
            [self.padding, self.padding],
            [1, 1],
            self.groups,
        )
    }
}

/// LayerNorm over the channel dimension of an NCHW tensor (the fork's `nn.LayerNorm` applied
/// channels-last), keys `{prefix}.weight` / `{prefix}.bias`.
pub struct ChannelNorm {
    weight: ParamId,
    bias: ParamId,
    channels: i64,
    eps: f64,
}

impl ChannelNorm {
    /// Declares an affine channel LayerNorm with this epsilon.
    pub fn new(params: &mut ParamBuilder, prefix: &str, channels: i64, eps: f64) -> Self {
        let weight = params.add(format!("{prefix}.weight"), &[channels], Init::Ones);
        let bias = params.add(format!("{prefix}.bias"), &[channels], Init::Zeros);
        Self { weight, bias, channels, eps }
    }

    /// Normalises every pixel's channel vector.
    pub fn forward(&self, params: &ParamSet, x: &Tensor) -> Tensor {
        x.permute([0, 2, 3, 1])
            .layer_norm([self.channels], Some(params.get(self.weight)), Some(params.get(self.bias)), self.eps, true)
            .permute([0, 3, 1, 2])
    }
}

/// A fully connected layer (`{prefix}.weight` `[out, in]`, `{prefix}.bias`), PyTorch init.
pub struct Linear {
    weight: ParamId,
    bias: ParamId,
}

impl Linear {
    /// Declares the layer.
    pub fn new(params: &mut ParamBuilder, prefix: &str, input: i64, output: i64) -> Self {
        let bound = 1.0 / (input as f64).sqrt();
        let weight = params.add(format!("{prefix}.weight"), &[output, input], Init::Uniform(bound));
        let bias = params.add(format!("{prefix}.bias"), &[output], Init::Uniform(bound));
        Self { weight, bias }
    }

    /// Applies `x · Wᵀ + b` to `[N, in]`.
    pub fn forward(&self, params: &ParamSet, x: &Tensor) -> Tensor {
        x.linear(params.get(self.weight), Some(params.get(self.bias)))
    }
}
