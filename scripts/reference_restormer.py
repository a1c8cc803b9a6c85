"""Independent PyTorch reference of the MaskDCPT fork's `Restormer` (inference only).

Written from shared/spec/maskdcpt.md §2.2 with the fork's state-dict names, so a
`restormer_maskdcpt_5d.pth` state dict loads with strict=True. Forward:
reflect-pad bottom/right to a multiple of 8 (the harness), run, crop.

    block(x):  x = x + attn(LN1(x));  x = x + ffn(LN2(x))
    attn:      qkv 1x1 (3c) -> depthwise 3x3 -> q, k, v split per head,
               q, k L2-normalised over the pixels, softmax(q k^T * t) v, 1x1 out
    ffn:       1x1 (2h) -> depthwise 3x3 -> gelu(first half) * second half -> 1x1
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZE_MULTIPLE = 8


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of every pixel (eps 1e-5, affine)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous both ways, as the fork's LayerNorm2d: a channels-last result would send the
        # next conv down another algorithm and change the last bits.
        return super().forward(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2).contiguous()


class TransposedAttention(nn.Module):
    def __init__(self, c: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=False)
        self.project_out = nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        split = lambda t: t.reshape(b, self.heads, c // self.heads, h * w)  # noqa: E731
        q, k, v = F.normalize(split(q), dim=-1), F.normalize(split(k), dim=-1), split(v)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.project_in = nn.Conv2d(c, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class Block(nn.Module):
    def __init__(self, c: int, heads: int, expansion: float):
        super().__init__()
        self.norm1 = ChannelNorm(c)
        self.attn = TransposedAttention(c, heads)
        self.norm2 = ChannelNorm(c)
        self.ffn = GatedFeedForward(c, int(c * expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.Module):
    """The fork wraps each level's blocks in a module with a `blocks` list."""

    def __init__(self, c: int, heads: int, count: int, expansion: float):
        super().__init__()
        self.blocks = nn.ModuleList([Block(c, heads, expansion) for _ in range(count)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class Resample(nn.Module):
    """3x3 conv then PixelUnshuffle(2) (`down`: c -> c/2 -> 2c) or PixelShuffle(2) (`up`: c -> 2c -> c/2)."""

    def __init__(self, c: int, down: bool):
        super().__init__()
        self.conv = nn.Conv2d(c, c // 2 if down else 2 * c, 3, padding=1, bias=False)
        self.shuffle = nn.PixelUnshuffle(2) if down else nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RestormerRef(nn.Module):
    def __init__(self, dim=48, blocks=(4, 6, 6, 8), refinement=4, heads=(1, 2, 4, 8), expansion=2.66):
        super().__init__()
        d = dim
        self.patch_embed = PatchEmbed(d)
        self.encoder_level1 = Stage(d, heads[0], blocks[0], expansion)
        self.down1_2 = Resample(d, down=True)
        self.encoder_level2 = Stage(2 * d, heads[1], blocks[1], expansion)
        self.down2_3 = Resample(2 * d, down=True)
        self.encoder_level3 = Stage(4 * d, heads[2], blocks[2], expansion)
        self.down3_4 = Resample(4 * d, down=True)
        self.latent = Stage(8 * d, heads[3], blocks[3], expansion)
        self.up4_3 = Resample(8 * d, down=False)
        self.reduce_chan_level3 = nn.Conv2d(8 * d, 4 * d, 1, bias=False)
        self.decoder_level3 = Stage(4 * d, heads[2], blocks[2], expansion)
        self.up3_2 = Resample(4 * d, down=False)
        self.reduce_chan_level2 = nn.Conv2d(4 * d, 2 * d, 1, bias=False)
        self.decoder_level2 = Stage(2 * d, heads[1], blocks[1], expansion)
        self.up2_1 = Resample(2 * d, down=False)
        self.decoder_level1 = Stage(2 * d, heads[0], blocks[0], expansion)
        self.refinement = Stage(2 * d, heads[0], refinement, expansion)
        self.output = nn.Conv2d(2 * d, 3, 3, padding=1, bias=False)

    def network(self, inp: torch.Tensor) -> torch.Tensor:
        e1 = self.encoder_level1(self.patch_embed(inp))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        x = self.latent(self.down3_4(e3))
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), e3], 1)))
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), e2], 1)))
        x = self.refinement(self.decoder_level1(torch.cat([self.up2_1(x), e1], 1)))
        return self.output(x) + inp

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """The harness: reflect-pad bottom/right to a multiple of 8, run, crop."""
        h, w = img.shape[-2:]
        ph, pw = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
        padded = F.pad(img, (0, pw, 0, ph), mode="reflect") if ph or pw else img
        return self.network(padded)[..., :h, :w]


@torch.no_grad()
def randomize_(net: nn.Module, seed: int) -> nn.Module:
    """Seeded random weights that keep activations O(1): convs ~ N(0, 1/fan_in), the output
    conv x 0.2, LayerNorm weight ~ 1 + N(0, 0.1^2) and bias ~ N(0, 0.1^2), temperatures
    uniform in [0.5, 2]. One generator, `named_parameters` order."""
    g = torch.Generator().manual_seed(seed)
    for name, p in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0]
        if leaf == "temperature":
            v = 0.5 + 1.5 * torch.rand(p.shape, generator=g)
        elif parent.rsplit(".", 1)[-1].startswith("norm"):
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "weight" and p.dim() == 4:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in) * (0.2 if parent == "output" else 1.0)
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
        p.copy_(v)
    return net
