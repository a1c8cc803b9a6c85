"""Independent PyTorch reference for MaskDCPT pre-training's two network pieces.

Written from shared/spec/maskdcpt.md section 2.6 on top of ``reference_nafnet``:

* :func:`masked_body` -- the masked NAFNet forward: a per-image patch grid (True =
  visible) nearest-upsampled to every pyramid level; input and intro output times the
  mask; in every block both LayerNorm outputs are zero at masked positions and the
  spatial branch (after ``conv3``) is multiplied by the mask before the beta residual;
  the FFN branch is not re-masked. Returns ``ending(x)`` (no input residual) and the
  decoder-stage outputs, highest resolution first.
* :class:`ClassifierRef` -- the degradation-classification decoder (``PromptIR_NoImg_DC``
  as the spec describes it): softmax mixing weights, per scale ``num_res_blocks``
  inverted bottlenecks (1x1 -> 3x3 -> 1x1 at twice the width, no bias, channels-first
  LayerNorm eps 1e-6, ReLUs), then 1x1 conv to the next width (the last keeps its own)
  -> 2x2 max-pool -> ReLU; ``last_stage``; spatial mean; ``fc``. With ``embed_image``
  it is ``PromptIR_DC``: the state starts as the image through ``conv_embed`` (7x7 conv,
  stride 2, padding 3, bias, to the first width; channels-first LayerNorm) instead of 0.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import reference_nafnet as R


def level_mask(grid: torch.Tensor, patch: int, level: int) -> torch.Tensor:
    """Float mask [N,1,H/2^level,W/2^level] from a bool grid [N,1,H/p,W/p]."""
    f = patch // (2**level)
    return grid.float().repeat_interleave(f, 2).repeat_interleave(f, 3)


def _masked_block(block: R.NAFBlock, inp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    x = block.norm1(inp) * m
    x = R.simple_gate(block.conv2(block.conv1(x)))
    x = x * block.sca(x)
    x = block.conv3(x) * m
    y = inp + x * block.beta
    x = block.norm2(y) * m
    x = block.conv5(R.simple_gate(block.conv4(x)))
    return y + x * block.gamma


def _group(group: R.BlockGroup, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    for b in group.blocks:
        x = _masked_block(b, x, m)
    return x


def masked_body(net: R.NAFNetRef, inp: torch.Tensor, grid: torch.Tensor, patch: int):
    masks = [level_mask(grid, patch, level) for level in range(net.levels + 1)]
    x = net.intro(inp * masks[0]) * masks[0]
    skips = []
    for level, (enc, down) in enumerate(zip(net.encoders, net.downs)):
        x = _group(enc, x, masks[level])
        skips.append(x)
        x = down(x)
    x = _group(net.middle_blks, x, masks[net.levels])
    features = []
    for stage, (dec, up, skip) in enumerate(zip(net._decoder_list(), net.ups, reversed(skips))):
        x = up(x) + skip
        x = _group(dec, x, masks[net.levels - 1 - stage])
        features.append(x)
    return net.ending(x), features[::-1]


def plain_features(net: R.NAFNetRef, inp: torch.Tensor):
    """Unmasked forward: (body(x) + x, decoder features highest resolution first). An
    all-visible mask multiplies by exactly 1, so this is the plain network."""
    p = 2**net.levels
    grid = torch.ones(inp.shape[0], 1, inp.shape[2] // p, inp.shape[3] // p, dtype=torch.bool)
    reconstruction, features = masked_body(net, inp, grid, p)
    return reconstruction + inp, features


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class NormedConv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, k: int):
        super().__init__(cin, cout, k, padding=k // 2, bias=False)
        self.norm = ChannelsFirstLayerNorm(cout)

    def forward(self, x):
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.conv1 = NormedConv(d, 2 * d, 1)
        self.conv2 = NormedConv(2 * d, 2 * d, 3)
        self.conv3 = NormedConv(2 * d, d, 1)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        return F.relu(self.conv3(y) + x)


class ClassifierRef(nn.Module):
    def __init__(self, dims: Sequence[int], blocks: int, classes: int, embed_image: bool = False):
        super().__init__()
        if embed_image:
            self.conv_embed = nn.Sequential(nn.Conv2d(3, dims[0], 7, 2, 3), ChannelsFirstLayerNorm(dims[0]))
        self.bottleneck_layers = nn.ModuleList(nn.Sequential(*[Bottleneck(d) for _ in range(blocks)]) for d in dims)
        self.downsample_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, dims[i + 1] if i + 1 < len(dims) else d, 1, bias=False), nn.MaxPool2d(2, 2), nn.ReLU())
            for i, d in enumerate(dims)
        )
        self.last_stage = nn.Sequential(*[Bottleneck(dims[-1]) for _ in range(blocks)])
        self.mixing_weights = nn.Parameter(torch.ones(len(dims)))
        self.fc = nn.Linear(dims[-1], classes)

    def forward(self, features, image=None):
        w = torch.softmax(self.mixing_weights, 0)
        s = self.conv_embed(image) if hasattr(self, "conv_embed") else 0
        for i, f in enumerate(features):
            s = self.downsample_layers[i](self.bottleneck_layers[i](s + w[i] * f))
        return self.fc(self.last_stage(s).mean(dim=[-1, -2]))
