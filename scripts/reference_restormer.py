"""Independent PyTorch references of the MaskDCPT fork's `Restormer` and `PromptIR`
(inference only).

Written from shared/spec/maskdcpt.md §2.2-2.3 with the fork's state-dict names, so
`restormer_maskdcpt_5d.pth` and `promptir_maskdcpt_5d.pth` state dicts load with strict=True.
Forward: reflect-pad bottom/right to a multiple of 8 (the harness), run, crop.

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
    def __init__(self, c: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * c, 3 * c, 3, padding=1, groups=3 * c, bias=bias)
        self.project_out = nn.Conv2d(c, c, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        split = lambda t: t.reshape(b, self.heads, c // self.heads, h * w)  # noqa: E731
        q, k, v = F.normalize(split(q), dim=-1), F.normalize(split(k), dim=-1), split(v)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    def __init__(self, c: int, hidden: int, bias: bool):
        super().__init__()
        self.project_in = nn.Conv2d(c, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, c, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class Block(nn.Module):
    def __init__(self, c: int, heads: int, expansion: float, bias: bool = False):
        super().__init__()
        self.norm1 = ChannelNorm(c)
        self.attn = TransposedAttention(c, heads, bias)
        self.norm2 = ChannelNorm(c)
        self.ffn = GatedFeedForward(c, int(c * expansion), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.Module):
    """The fork wraps each level's blocks in a module with a `blocks` list."""

    def __init__(self, c: int, heads: int, count: int, expansion: float, bias: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList([Block(c, heads, expansion, bias) for _ in range(count)])

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
        return harness(self.network, img)


def harness(network, img: torch.Tensor) -> torch.Tensor:
    """The test harness: reflect-pad bottom/right to a multiple of 8, run, crop."""
    h, w = img.shape[-2:]
    ph, pw = (-h) % SIZE_MULTIPLE, (-w) % SIZE_MULTIPLE
    padded = F.pad(img, (0, pw, 0, ph), mode="reflect") if ph or pw else img
    return network(padded)[..., :h, :w]


class PromptGen(nn.Module):
    """A prompt from the feature's spatial mean: softmax(linear(mean)) mixes `count` learned
    `channels x size x size` prompts, resized bilinearly (align_corners=False) to the feature's
    size, then a bias-free 3x3 conv."""

    def __init__(self, channels: int, count: int, size: int, features: int):
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, count, channels, size, size))
        self.linear_layer = nn.Linear(features, count)
        self.conv3x3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)
        prompt = F.interpolate(prompt, x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)


class PromptIRRef(nn.Module):
    """The fork's PromptIR: Restormer's U-shape with biases in every block and 1x1 conv, and a
    prompt stage before each up-sampling: the feature concatenated with its prompt goes
    through one transformer block (level 2's heads) and a 1x1 conv to 4 dim (2 dim before the
    last up-sampling). Widths are the class's, written for dim 48: the prompts have 320, 128
    and 64 channels and the concatenations before `reduce_chan_level3` 2 dim + 192."""

    def __init__(self, dim=48, blocks=(4, 6, 6, 8), refinement=4, heads=(1, 2, 4, 8), expansion=2.66,
                 prompts=((64, 64, 96), (128, 32, 192), (320, 16, 384)), prompt_count=5):
        super().__init__()
        d = dim
        (c1, s1, f1), (c2, s2, f2), (c3, s3, f3) = prompts
        self.patch_embed = PatchEmbed(d)
        self.prompt1 = PromptGen(c1, prompt_count, s1, f1)
        self.prompt2 = PromptGen(c2, prompt_count, s2, f2)
        self.prompt3 = PromptGen(c3, prompt_count, s3, f3)
        self.encoder_level1 = Stage(d, heads[0], blocks[0], expansion, bias=True)
        self.down1_2 = Resample(d, down=True)
        self.encoder_level2 = Stage(2 * d, heads[1], blocks[1], expansion, bias=True)
        self.down2_3 = Resample(2 * d, down=True)
        self.encoder_level3 = Stage(4 * d, heads[2], blocks[2], expansion, bias=True)
        self.down3_4 = Resample(4 * d, down=True)
        self.latent = Stage(8 * d, heads[3], blocks[3], expansion, bias=True)
        self.up4_3 = Resample(4 * d, down=False)
        self.reduce_chan_level3 = nn.Conv2d(2 * d + 4 * d, 4 * d, 1, bias=True)
        self.noise_level3 = Block(8 * d + c3, heads[2], expansion, bias=True)
        self.reduce_noise_level3 = nn.Conv2d(8 * d + c3, 4 * d, 1, bias=True)
        self.decoder_level3 = Stage(4 * d, heads[2], blocks[2], expansion, bias=True)
        self.up3_2 = Resample(4 * d, down=False)
        self.reduce_chan_level2 = nn.Conv2d(4 * d, 2 * d, 1, bias=True)
        self.noise_level2 = Block(4 * d + c2, heads[2], expansion, bias=True)
        self.reduce_noise_level2 = nn.Conv2d(4 * d + c2, 4 * d, 1, bias=True)
        self.decoder_level2 = Stage(2 * d, heads[1], blocks[1], expansion, bias=True)
        self.up2_1 = Resample(2 * d, down=False)
        self.noise_level1 = Block(2 * d + c1, heads[2], expansion, bias=True)
        self.reduce_noise_level1 = nn.Conv2d(2 * d + c1, 2 * d, 1, bias=True)
        self.decoder_level1 = Stage(2 * d, heads[0], blocks[0], expansion, bias=True)
        self.refinement = Stage(2 * d, heads[0], refinement, expansion, bias=True)
        self.output = nn.Conv2d(2 * d, 3, 3, padding=1, bias=True)

    def network(self, inp: torch.Tensor) -> torch.Tensor:
        prompted = lambda x, gen, block, reduce: reduce(block(torch.cat([x, gen(x)], 1)))  # noqa: E731
        e1 = self.encoder_level1(self.patch_embed(inp))
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        x = self.latent(self.down3_4(e3))
        x = prompted(x, self.prompt3, self.noise_level3, self.reduce_noise_level3)
        x = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(x), e3], 1)))
        x = prompted(x, self.prompt2, self.noise_level2, self.reduce_noise_level2)
        x = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(x), e2], 1)))
        x = prompted(x, self.prompt1, self.noise_level1, self.reduce_noise_level1)
        x = self.refinement(self.decoder_level1(torch.cat([self.up2_1(x), e1], 1)))
        return self.output(x) + inp

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return harness(self.network, img)


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
        elif leaf == "prompt_param":
            v = torch.rand(p.shape, generator=g)
        elif leaf == "bias" and not parent.rsplit(".", 1)[-1].startswith("norm"):
            v = 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "weight" and p.dim() == 2:  # the prompts' linear layers
            v = torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1])
        elif parent.rsplit(".", 1)[-1].startswith("norm"):
            v = (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(p.shape, generator=g)
        elif leaf == "weight" and p.dim() == 4:
            fan_in = p.shape[1] * p.shape[2] * p.shape[3]
            v = torch.randn(p.shape, generator=g) / math.sqrt(fan_in) * (0.2 if parent == "output" else 1.0)
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
        p.copy_(v)
    return net
