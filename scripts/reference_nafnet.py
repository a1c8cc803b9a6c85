"""Independent PyTorch reference for NAFNet-style restoration networks.

Written from docs/spec (shared/spec/maskdcpt.md sections 2.1, 2.5, 6.2), not
copied from any repository. Two state-dict layouts are supported:

* ``family="maskdcpt"`` -- the MaskDCPT fork's ``NAFNetBaseline``:
  keys ``intro``, ``encoders.N.blocks.M.*``, ``downs.N``,
  ``middle_blks.blocks.M.*``, ``ups.N.0.weight``, ``decoderN.blocks.M.*``,
  ``ending``. LayerNorm = channels-last ``nn.LayerNorm`` (eps 1e-5). The
  network does NOT pad; the evaluation harness reflect-pads bottom/right to a
  multiple of 16 and crops (see :func:`run_maskdcpt`).
* ``family="nafnet"`` -- upstream megvii NAFNet: keys ``encoders.N.M.*``,
  ``middle_blks.M.*``, ``decoders.N.M.*``, ``ups.N.0.weight``. LayerNorm over
  channels with mean / biased variance and eps 1e-6. The forward zero-pads
  bottom/right to a multiple of ``2**len(encoders)`` and crops.

Both: global residual ``output = body(x) + x``; NAFBlock with DW_Expand =
FFN_Expand = 2; SCA = global average pool over the whole (padded) feature map
-> 1x1 conv with bias -> channel-wise multiply; dropout = identity.

Library use::

    from reference_nafnet import build_model, run_maskdcpt, run_nafnet
    net = build_model("maskdcpt", width=8, enc_blocks=[1,1,1,2],
                      middle_blocks=1, dec_blocks=[1,1,1,1])
    out_hwc = run_maskdcpt(net, img_hwc)      # numpy H x W x 3 float32

CLI (self check of the parameter count of the released configuration)::

    .venv-torch/bin/python scripts/reference_nafnet.py
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------
# Normalisation layers
# --------------------------------------------------------------------------


class ChannelsLastLayerNorm(nn.LayerNorm):
    """MaskDCPT fork: NCHW -> NHWC -> nn.LayerNorm(C, eps=1e-5) -> NCHW.

    Subclassing nn.LayerNorm keeps the state-dict keys ``<name>.weight`` and
    ``<name>.bias`` without an extra module level.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # .contiguous() only fixes the memory layout (same maths; it makes the
        # following convs take the same kernel path as the fork's code)
        y = super().forward(x.permute(0, 2, 3, 1).contiguous())
        return y.permute(0, 3, 1, 2).contiguous()


class MeanVarLayerNorm2d(nn.Module):
    """Upstream NAFNet LayerNorm2d: per pixel, over channels, mean and biased
    variance, eps 1e-6, affine weight/bias of shape (C,)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _make_norm(family: str, c: int) -> nn.Module:
    if family == "maskdcpt":
        return ChannelsLastLayerNorm(c, eps=1e-5)
    if family == "nafnet":
        return MeanVarLayerNorm2d(c, eps=1e-6)
    raise ValueError(f"unknown family {family!r}")


# --------------------------------------------------------------------------
# NAFBlock
# --------------------------------------------------------------------------


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    def __init__(self, c: int, family: str):
        super().__init__()
        dw = 2 * c
        ffn = 2 * c
        self.norm1 = _make_norm(family, c)
        self.conv1 = nn.Conv2d(c, dw, 1, bias=True)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw, bias=True)
        # index 0: global average pool (no weights), index 1: 1x1 conv
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1, bias=True))
        self.conv3 = nn.Conv2d(dw // 2, c, 1, bias=True)
        self.norm2 = _make_norm(family, c)
        self.conv4 = nn.Conv2d(c, ffn, 1, bias=True)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1, bias=True)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.norm1(inp)
        x = self.conv1(x)
        x = self.conv2(x)
        x = simple_gate(x)
        x = x * self.sca(x)
        x = self.conv3(x)
        y = inp + x * self.beta
        x = self.norm2(y)
        x = self.conv4(x)
        x = simple_gate(x)
        x = self.conv5(x)
        return y + x * self.gamma


class BlockGroup(nn.Module):
    """MaskDCPT container: a ModuleList attribute ``blocks``."""

    def __init__(self, c: int, n: int, family: str):
        super().__init__()
        self.blocks = nn.ModuleList([NAFBlock(c, family) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x


def _group(family: str, c: int, n: int) -> nn.Module:
    if family == "maskdcpt":
        return BlockGroup(c, n, family)
    return nn.Sequential(*[NAFBlock(c, family) for _ in range(n)])


# --------------------------------------------------------------------------
# U-Net
# --------------------------------------------------------------------------


class NAFNetRef(nn.Module):
    def __init__(
        self,
        family: str = "maskdcpt",
        img_channel: int = 3,
        width: int = 64,
        enc_blocks: Sequence[int] = (1, 1, 1, 28),
        middle_blocks: int = 1,
        dec_blocks: Sequence[int] = (1, 1, 1, 1),
    ):
        super().__init__()
        if family not in ("maskdcpt", "nafnet"):
            raise ValueError(family)
        if len(enc_blocks) != len(dec_blocks):
            raise ValueError("enc_blocks and dec_blocks must have equal length")
        self.family = family
        self.levels = len(enc_blocks)
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1, bias=True)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        c = width
        for n in enc_blocks:
            self.encoders.append(_group(family, c, n))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2, bias=True))
            c *= 2
        self.middle_blks = _group(family, c, middle_blocks)
        decs = []
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            decs.append(_group(family, c, n))
        if family == "maskdcpt":
            # attributes decoder0, decoder1, ... (not a ModuleList)
            self._dec_names = []
            for i, d in enumerate(decs):
                name = f"decoder{i}"
                self.add_module(name, d)
                self._dec_names.append(name)
        else:
            self.decoders = nn.ModuleList(decs)

    def _decoder_list(self) -> list:
        if self.family == "maskdcpt":
            return [getattr(self, n) for n in self._dec_names]
        return list(self.decoders)

    def body(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.intro(inp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for dec, up, skip in zip(self._decoder_list(), self.ups, reversed(skips)):
            x = up(x)
            x = x + skip
            x = dec(x)
        return self.ending(x)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        if self.family == "maskdcpt":
            # no padding inside: H, W must be multiples of 2**levels
            return self.body(inp) + inp
        _, _, h, w = inp.shape
        m = 2 ** self.levels
        ph = (m - h % m) % m
        pw = (m - w % m) % m
        x = F.pad(inp, (0, pw, 0, ph), mode="constant", value=0.0)
        out = self.body(x) + x
        return out[:, :, :h, :w]


def build_model(
    family: str,
    width: int,
    enc_blocks: Sequence[int],
    middle_blocks: int,
    dec_blocks: Sequence[int],
) -> NAFNetRef:
    return NAFNetRef(family, 3, width, list(enc_blocks), middle_blocks, list(dec_blocks))


class WindowMean(nn.Module):
    """Test-time local converter (TLC) pooling of upstream ``NAFNetLocal`` (fast_imp=False),
    written from its definition: a map no larger than the ``rows x cols`` window takes the
    global mean; otherwise every window (each side clipped to the map) is averaged at stride 1
    and the valid means are extended to the map's size by replicating their edges, centred
    ((k - 1) // 2 before, k // 2 after)."""

    def __init__(self, rows: int, cols: int):
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        if self.rows >= h and self.cols >= w:
            return x.mean(dim=(2, 3), keepdim=True)
        k1, k2 = min(self.rows, h), min(self.cols, w)
        means = F.avg_pool2d(x, (k1, k2), stride=1)
        return F.pad(means, ((k2 - 1) // 2, k2 // 2, (k1 - 1) // 2, k1 // 2), mode="replicate")


class SampledWindowMean(nn.Module):
    """The pooling of MaskDCPT's own ``NAFNet`` class (its TLC with ``fast_imp=True``), written
    from its definition: the global mean where the map fits the ``rows x cols`` window, as
    ``WindowMean``; otherwise per side a step r (the largest of 5, 4, 3, 2, 1 dividing the side,
    at most ``most``), the samples every r pixels from pixel r on, windows of ``min(samples,
    k // r)`` consecutive samples averaged at stride 1, each mean repeated r times, and the
    result extended to the map by replicating its edges, centred (floor before, ceil after).
    Windows of no sample fail, as in the official code."""

    def __init__(self, rows: int, cols: int, most: tuple[int, int]):
        super().__init__()
        self.rows, self.cols, self.most = rows, cols, most

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        if self.rows >= h and self.cols >= w:
            return x.mean(dim=(2, 3), keepdim=True)
        step = lambda n, most: min(next(r for r in (5, 4, 3, 2, 1) if n % r == 0), most)  # noqa: E731
        r1, r2 = step(h, self.most[0]), step(w, self.most[1])
        samples = x[:, :, r1::r1, r2::r2]
        k1, k2 = min(samples.shape[2], self.rows // r1), min(samples.shape[3], self.cols // r2)
        means = F.avg_pool2d(samples, (k1, k2), stride=1)
        means = means.repeat_interleave(r1, dim=2).repeat_interleave(r2, dim=3)
        ph, pw = h - means.shape[2], w - means.shape[3]
        return F.pad(means, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")


def use_tlc_(net: NAFNetRef, train_size: int = 256, sampled: bool = False) -> NAFNetRef:
    """Replaces every block's global SCA pooling by TLC windows for a network trained on
    ``train_size`` square crops: 1.5x the crop (rounded down), times the level's map size at
    the (padded) crop over the crop size. Upstream NAFNet pads to 2**levels inside forward,
    the MaskDCPT harness to 16. ``sampled``: MaskDCPT's ``NAFNet`` class instead
    (``SampledWindowMean``; its steps at most 5x the level's map at the crop over the crop)."""
    multiple = 2 ** net.levels if net.family == "nafnet" else 16
    padded = -(-train_size // multiple) * multiple
    side = lambda level: (padded >> level) * (train_size * 3 // 2) // train_size  # noqa: E731
    most = lambda level: max(1, 5 * (padded >> level) // train_size)  # noqa: E731
    groups = [(g, level) for level, g in enumerate(net.encoders)]
    groups.append((net.middle_blks, net.levels))
    groups += [(g, net.levels - 1 - i) for i, g in enumerate(net._decoder_list())]
    for group, level in groups:
        for block in group.modules():
            if isinstance(block, NAFBlock):
                k = side(level)
                pool = SampledWindowMean(k, k, (most(level),) * 2) if sampled else WindowMean(k, k)
                block.sca[0] = pool
    return net


# --------------------------------------------------------------------------
# Harness helpers (numpy H x W x 3 float32 in, H x W x 3 float32 out)
# --------------------------------------------------------------------------


def reflect_pad_bottom_right(img_hwc: np.ndarray, multiple: int) -> np.ndarray:
    """numpy ``mode="reflect"`` (mirror without repeating the edge pixel)
    on the bottom and right edges, up to the next multiple. Identical to
    torch's ``F.pad(..., "reflect")`` whenever the pad is smaller than the
    dimension; for larger pads numpy mirrors repeatedly (torch refuses)."""
    h, w = img_hwc.shape[:2]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    return np.pad(img_hwc, ((0, ph), (0, pw), (0, 0)), mode="reflect")


def _to_nchw(img_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img_hwc.transpose(2, 0, 1)))[None].float()


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t[0].permute(1, 2, 0).detach().cpu().numpy().astype(np.float32))


@torch.no_grad()
def run_maskdcpt(net: NAFNetRef, img_hwc: np.ndarray, multiple: int = 16) -> np.ndarray:
    """MaskDCPT harness (spec 6.2): reflect-pad bottom/right to a multiple of
    16, run, crop back to H x W. No clamping. When both pads are smaller than
    the dimensions this uses torch's reflect pad (exactly the harness); else
    it falls back to numpy's repeated reflection (extension of the harness).
    The input goes to the network's device and dtype (a GPU, FP16); the output
    comes back as float32."""
    param = next(net.parameters())
    h, w = img_hwc.shape[:2]
    ph = (multiple - h % multiple) % multiple
    pw = (multiple - w % multiple) % multiple
    if ph < h and pw < w:
        x = F.pad(_to_nchw(img_hwc), (0, pw, 0, ph), mode="reflect")
    else:
        x = _to_nchw(reflect_pad_bottom_right(img_hwc, multiple))
    y = net(x.to(param.device, param.dtype))
    return _to_hwc(y[:, :, :h, :w])


@torch.no_grad()
def run_nafnet(net: NAFNetRef, img_hwc: np.ndarray) -> np.ndarray:
    """Upstream NAFNet: padding happens inside forward (zeros)."""
    return _to_hwc(net(_to_nchw(img_hwc)))


# --------------------------------------------------------------------------
# Random ("realistic scale") weights
# --------------------------------------------------------------------------


@torch.no_grad()
def randomize_(net: nn.Module, seed: int, scale_gate: float = 0.5) -> nn.Module:
    """Seeded random weights that keep activations O(1):

    * conv weights ~ N(0, 1/fan_in) (variance preserving), biases ~ N(0, 0.1^2)
    * LayerNorm weight ~ 1 + N(0, 0.1^2), bias ~ N(0, 0.1^2)
    * NAFBlock beta / gamma ~ N(0, scale_gate^2) (non-zero: zero-init would
      hide every block)
    * ``ending`` weight scaled by 0.2 so the restored image stays near [0, 1].

    Parameters are visited in ``named_parameters`` order with one generator.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        is_norm = parent.rsplit(".", 1)[-1].startswith("norm")
        if leaf in ("beta", "gamma"):
            v = torch.randn(p.shape, generator=g) * scale_gate
        elif is_norm and leaf == "weight":
            v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "bias":
            v = 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "weight" and p.dim() == 4:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in)
            if parent == "ending":
                v = v * 0.2
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
        p.copy_(v)
    return net


# --------------------------------------------------------------------------
# FLOPs (2 x MACs) computed from the layer shapes
# --------------------------------------------------------------------------


def conv_macs(cin: int, cout: int, k: int, groups: int, hout: int, wout: int) -> int:
    return (cin // groups) * k * k * cout * hout * wout


def count_flops(
    height: int,
    width_px: int,
    width: int = 64,
    enc_blocks: Sequence[int] = (1, 1, 1, 28),
    middle_blocks: int = 1,
    dec_blocks: Sequence[int] = (1, 1, 1, 1),
    img_channel: int = 3,
    include_elementwise: bool = False,
) -> int:
    """FLOPs = 2 x MACs of all convolutions (incl. SCA 1x1 conv on the pooled
    1x1 map) at an input of height x width_px (must be a multiple of
    2**levels, i.e. the already padded size). With include_elementwise=False
    this matches torch.utils.flop_counter (convs only); with True it also adds
    one FLOP per element for LayerNorm-free elementwise ops (not used by
    default)."""
    levels = len(enc_blocks)
    m = 2 ** levels
    assert height % m == 0 and width_px % m == 0, "pass the padded size"

    def block_macs(c: int, h: int, w: int) -> int:
        t = 0
        t += conv_macs(c, 2 * c, 1, 1, h, w)  # conv1
        t += conv_macs(2 * c, 2 * c, 3, 2 * c, h, w)  # conv2 dw
        t += conv_macs(c, c, 1, 1, 1, 1)  # sca
        t += conv_macs(c, c, 1, 1, h, w)  # conv3
        t += conv_macs(c, 2 * c, 1, 1, h, w)  # conv4
        t += conv_macs(c, c, 1, 1, h, w)  # conv5
        return t

    def block_elem(c: int, h: int, w: int) -> int:
        # rough count: 2 LN (~8/elt), SG x2, SCA mul, 2 scale-and-add (2/elt)
        return (8 * c + c + c + 2 * c + 8 * c + c + 2 * c) * h * w

    h, w = height, width_px
    c = width
    macs = conv_macs(img_channel, c, 3, 1, h, w)
    elem = 0
    for n in enc_blocks:
        macs += n * block_macs(c, h, w)
        elem += n * block_elem(c, h, w)
        h //= 2
        w //= 2
        macs += conv_macs(c, 2 * c, 2, 1, h, w)
        c *= 2
    macs += middle_blocks * block_macs(c, h, w)
    elem += middle_blocks * block_elem(c, h, w)
    for n in dec_blocks:
        macs += conv_macs(c, 2 * c, 1, 1, h, w)
        h *= 2
        w *= 2
        c //= 2
        elem += c * h * w  # skip add
        macs += n * block_macs(c, h, w)
        elem += n * block_elem(c, h, w)
    macs += conv_macs(c, img_channel, 3, 1, h, w)
    flops = 2 * macs
    if include_elementwise:
        flops += elem
    return flops


def count_params(net: nn.Module) -> tuple[int, int]:
    sd = net.state_dict()
    return sum(v.numel() for v in sd.values()), len(sd)


RELEASED = dict(width=64, enc_blocks=[1, 1, 1, 28], middle_blocks=1, dec_blocks=[1, 1, 1, 1])


def _self_check() -> None:
    net = build_model("maskdcpt", **RELEASED)
    n, k = count_params(net)
    assert n == 67_888_835, n
    assert k == 664, k
    print(f"maskdcpt released config: {n} params, {k} tensors (OK)")
    # FLOPs vs torch's flop counter on a small input
    from torch.utils.flop_counter import FlopCounterMode

    small = build_model("maskdcpt", width=8, enc_blocks=[1, 1, 1, 2], middle_blocks=1, dec_blocks=[1, 1, 1, 1])
    x = torch.rand(1, 3, 48, 64)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        small(x)
    ours = count_flops(48, 64, 8, [1, 1, 1, 2], 1, [1, 1, 1, 1])
    assert fc.get_total_flops() == ours, (fc.get_total_flops(), ours)
    print(f"count_flops matches torch FlopCounterMode ({ours} FLOPs at 48x64, w8)")
    print(f"released config @256x256: {count_flops(256, 256) / 1e9:.2f} GFLOPs")


if __name__ == "__main__":
    _self_check()
