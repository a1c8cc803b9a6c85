"""Regenerates tests/golden/trainer_masked.safetensors and trainer_image_head.safetensors:
the trainer's tch networks are compared with this PyTorch reference
(scripts/reference_pretrain.py) on random weights.

    .venv-torch/bin/python scripts/gen_trainer_golden.py   (torch 2.x, numpy, safetensors not needed)

The file holds the backbone weights (fork keys), the head (``classifier.`` prefix), an
input batch, a visibility grid, and the three reference outputs: the restoration forward,
the masked reconstruction and the head's logits (on unmasked and masked features). The
second file holds a head that embeds the image (``PromptIR_DC``, ``classifier.`` prefix)
over the same backbone's features from level 1 down, and its logits on the plain input and
on the masked one (the input times the visibility grid, as the backbone reads it).
"""

from __future__ import annotations

import json
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference_nafnet as R  # noqa: E402
import reference_pretrain as P  # noqa: E402

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
OUT, OUT_IMAGE_HEAD = GOLDEN / "trainer_masked.safetensors", GOLDEN / "trainer_image_head.safetensors"
WIDTH, ENC, MIDDLE, DEC, PATCH, CLASSES, BLOCKS = 8, [1, 1, 2], 1, [1, 1, 1], 16, 19, 2


def write_safetensors(tensors: "OrderedDict[str, torch.Tensor]", meta: dict, path: Path) -> None:
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().float().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    net = R.randomize_(R.build_model("maskdcpt", WIDTH, ENC, MIDDLE, DEC), seed=1)
    dims = [WIDTH << (len(ENC) - 1 - s) for s in range(len(DEC))][::-1]
    head = P.ClassifierRef(dims, BLOCKS, CLASSES)
    for p in head.parameters():
        p.normal_(0.0, 0.2)
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(2))
    grid = torch.rand(2, 1, 32 // PATCH, 48 // PATCH, generator=torch.Generator().manual_seed(3)) < 0.5
    restored, features = P.plain_features(net, x)
    assert torch.allclose(restored, net(x), atol=1e-6)
    reconstruction, masked_features = P.masked_body(net, x, grid, PATCH)
    tensors = OrderedDict((k, v) for k, v in net.state_dict().items())
    tensors.update((f"classifier.{k}", v) for k, v in head.state_dict().items())
    tensors["input"] = x
    tensors["grid"] = grid.float()
    tensors["restored"] = restored
    tensors["logits"] = head(features)
    tensors["reconstruction"] = reconstruction
    tensors["masked_logits"] = head(masked_features)
    meta = {"width": str(WIDTH), "enc_blocks": json.dumps(ENC), "middle_blocks": str(MIDDLE),
            "dec_blocks": json.dumps(DEC), "patch": str(PATCH), "classes": str(CLASSES), "blocks": str(BLOCKS),
            "torch": torch.__version__}
    write_safetensors(tensors, meta, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

    image_head = P.ClassifierRef(dims[1:], BLOCKS, CLASSES, embed_image=True)
    for p in image_head.parameters():
        p.normal_(0.0, 0.2)
    seen = x * grid.float().repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)
    tensors = OrderedDict((f"classifier.{k}", v) for k, v in image_head.state_dict().items())
    tensors["logits"] = image_head(features[1:], x)
    tensors["masked_logits"] = image_head(masked_features[1:], seen)
    write_safetensors(tensors, meta, OUT_IMAGE_HEAD)
    print(f"wrote {OUT_IMAGE_HEAD} ({OUT_IMAGE_HEAD.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
