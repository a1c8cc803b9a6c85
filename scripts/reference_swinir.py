"""Independent PyTorch reference of the MaskDCPT fork's `SwinIR` (inference only).

Written from shared/spec/maskdcpt.md §2.4 with the fork's state-dict names, so a
`swinir_maskdcpt_5d.pth` state dict loads with strict=True. Forward: reflect-pad bottom/right
to a multiple of the window (the harness), run, crop.

    x' = x - mean;  f = conv_first(x');  t = norm(groups(patch_norm(tokens(f))))
    out = x' + conv_last(conv_after_body(t) + f) + mean
    group(t):  t + conv(blocks(t))
    block(t):  t = t + roll_back(window_attention(windows(roll(LN1(t)))));  t + mlp(LN2(t))

The fork's attention has no relative position bias and its shifted windows no mask: odd blocks
roll by -window/2, attend within windows (wrapped tokens attend to each other), roll back.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, hidden: int, qkv_bias: bool):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        (h, w), (b, length, c), ws, s = size, x.shape, self.window, self.shift
        y = self.norm1(x).view(b, h, w, c)
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        windows = y.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws * ws, c)
        windows = self.attn(windows).view(-1, ws, ws, c)
        y = windows.view(b, h // ws, w // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + y.view(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class Blocks(nn.Module):
    def __init__(self, blocks: list[SwinBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class ResidualGroup(nn.Module):
    """Blocks, then a 3x3 conv on the token map, plus the group's input."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, hidden: int, qkv_bias: bool):
        super().__init__()
        self.residual_group = Blocks(
            [SwinBlock(dim, heads, window, window // 2 if j % 2 else 0, hidden, qkv_bias) for j in range(depth)])
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        t = x
        for block in self.residual_group.blocks:
            t = block(t, size)
        b, _, c = t.shape
        t = t.transpose(1, 2).view(b, c, size[0], size[1])
        return self.conv(t).flatten(2).transpose(1, 2) + x


class PatchNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class SwinIRRef(nn.Module):
    """The fork's SwinIR for restoration (upscale 1, `1conv` residual connections); the first
    `encode_layers` groups are stored as `encode_layers.i`, the rest as `decode_layersi`."""

    def __init__(self, embed_dim=180, depths=(6, 6, 6, 6, 6, 6), heads=(6, 6, 6, 6, 6, 6), window=8,
                 mlp_ratio=2.0, qkv_bias=True, patch_norm=True, encode_layers=None):
        super().__init__()
        self.window = window
        self.groups = len(depths)
        self.encode_count = len(depths) // 2 if encode_layers is None else encode_layers
        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchNorm(embed_dim) if patch_norm else None
        hidden = int(embed_dim * mlp_ratio)
        groups = [ResidualGroup(embed_dim, d, h, window, hidden, qkv_bias) for d, h in zip(depths, heads)]
        self.encode_layers = nn.ModuleList(groups[:self.encode_count])
        for i, group in enumerate(groups[self.encode_count:]):
            setattr(self, f"decode_layers{i}", group)
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_last = nn.Conv2d(embed_dim, 3, 3, 1, 1)

    def ordered_groups(self) -> list[ResidualGroup]:
        decode = [getattr(self, f"decode_layers{i}") for i in range(self.groups - self.encode_count)]
        return list(self.encode_layers) + decode

    def network(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(RGB_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) * 1.0
        first = self.conv_first(x)
        size = (first.shape[2], first.shape[3])
        t = first.flatten(2).transpose(1, 2)
        if self.patch_embed is not None:
            t = self.patch_embed.norm(t)
        for group in self.ordered_groups():
            t = group(t, size)
        t = self.norm(t)
        b, _, c = t.shape
        t = t.transpose(1, 2).view(b, c, size[0], size[1])
        x = x + self.conv_last(self.conv_after_body(t) + first)
        return x / 1.0 + mean

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        ph, pw = (-h) % self.window, (-w) % self.window
        padded = F.pad(img, (0, pw, 0, ph), mode="reflect") if ph or pw else img
        return self.network(padded)[..., :h, :w]


def randomize_(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights that keep activations O(1): linear and conv weights ~
    N(0, 1/fan_in) (`conv_last` x 0.2), biases ~ N(0, 0.1^2), LayerNorm weight ~ 1 + N(0, 0.1^2)
    and bias ~ N(0, 0.1^2). One generator, `named_parameters` order."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            parent, leaf = name.rsplit(".", 1)
            if parent.rsplit(".", 1)[-1].startswith("norm"):
                v = (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=g)
            elif leaf == "bias":
                v = 0.1 * torch.randn(p.shape, generator=g)
            elif leaf == "weight":
                fan_in = math.prod(p.shape[1:])
                v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in) * (0.2 if parent == "conv_last" else 1.0)
            else:
                raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
            p.copy_(v)
    return net
