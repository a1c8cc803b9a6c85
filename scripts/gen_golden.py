"""Generate the golden fixtures in tests/golden/ (deterministic, CPU, float32).

    .venv-torch/bin/python scripts/gen_golden.py

Uses the independent reference implementation in scripts/reference_nafnet.py
(checked bit-exact against the official MaskDCPT and megvii NAFNet modules).
Models carry seeded RANDOM weights at a realistic scale (see
reference_nafnet.randomize_), inputs are smooth random RGB images plus noise
in [0, 1], outputs are the raw network outputs cropped to H x W (not clamped).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import struct
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_nafnet as R  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "golden"

MASKDCPT_CFG = dict(width=8, enc_blocks=[1, 1, 1, 2], middle_blocks=1, dec_blocks=[1, 1, 1, 1])
NAFNET_CFG = dict(width=8, enc_blocks=[1, 1, 2], middle_blocks=2, dec_blocks=[1, 1, 1])

SEED_PARAMS = 1001  # maskdcpt "params"
SEED_EMA = 1002  # maskdcpt "params_ema"
SEED_NAFNET = 2001
TLC_TRAIN = 32  # training crop of the TLC case: windows of 48, 24, 12, 6 pixels per level


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth random RGB image (bicubic-upsampled coarse grid) + Gaussian
    noise (sigma 0.03), clipped to [0, 1]; H x W x 3 float32."""
    rng = np.random.default_rng(seed)
    gh, gw = max(2, h // 8 + 2), max(2, w // 8 + 2)
    coarse = torch.from_numpy(rng.random((1, 3, gh, gw)).astype(np.float32))
    smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    img = smooth.permute(1, 2, 0).numpy() + rng.normal(0.0, 0.03, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------

_ST_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}


def write_safetensors(tensors: "OrderedDict[str, torch.Tensor]", path: Path) -> str:
    """Write with the `safetensors` package when importable, else by hand
    (8-byte LE header length + JSON header padded with spaces to 8 bytes +
    raw little-endian data). Returns which writer was used."""
    tensors = OrderedDict((k, v.detach().contiguous().cpu()) for k, v in tensors.items())
    try:
        from safetensors.torch import save_file

        save_file(dict(tensors), str(path), metadata={"format": "pt"})
        return "safetensors package"
    except ImportError:
        pass
    header: dict = {"__metadata__": {"format": "pt"}}
    blobs = []
    off = 0
    for k in sorted(tensors):
        t = tensors[k]
        b = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[k] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return "hand-written"


def read_safetensors(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """Minimal independent reader (used to check what was written)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = OrderedDict()
    np_dt = {"F16": np.float16, "F32": np.float32}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(raw[base + a : base + b], dtype=np_dt[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out


# --------------------------------------------------------------------------
# BasicSR-style loading (mirrors basicsr BaseModel.load_network)
# --------------------------------------------------------------------------


def basicsr_load(path: Path, param_key: str | None) -> "OrderedDict[str, torch.Tensor]":
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if "params" in obj or "params_ema" in obj:
        key = param_key or "params_ema"
        if key not in obj and "params" in obj:
            key = "params"
        obj = obj[key]
    return OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in obj.items())


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def f64_diff(net: R.NAFNetRef, img: np.ndarray, out32: np.ndarray, family: str) -> float:
    """max |f32 reference - f64 reference|: an indication of the float32
    rounding noise in each golden output (useful to pick test tolerances)."""
    net64 = copy.deepcopy(net).double().eval()  # keeps TLC pooling where the net has it
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None].double()
    h, w = img.shape[:2]
    with torch.no_grad():
        if family == "maskdcpt":
            xp = torch.from_numpy(R.reflect_pad_bottom_right(img.astype(np.float64), 16).transpose(2, 0, 1).copy())[None]
            y = net64(xp)[:, :, :h, :w]
        else:
            y = net64(x)
    y = y[0].permute(1, 2, 0).numpy()
    return float(np.abs(y - out32.astype(np.float64)).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    def save_npy(name: str, a: np.ndarray) -> str:
        assert a.dtype == np.float32 and a.ndim == 3 and a.shape[2] == 3
        np.save(out / name, np.ascontiguousarray(a))
        return name

    # ---------------- models ----------------
    md_params = R.randomize_(R.build_model("maskdcpt", **MASKDCPT_CFG).eval(), SEED_PARAMS)
    md_ema = R.randomize_(R.build_model("maskdcpt", **MASKDCPT_CFG).eval(), SEED_EMA)
    nf = R.randomize_(R.build_model("nafnet", **NAFNET_CFG).eval(), SEED_NAFNET)

    # BasicSR checkpoint: {"params": OrderedDict, "params_ema": OrderedDict}
    # (net.state_dict() as BasicSR's save_network stores it, incl. _metadata)
    torch.save({"params": md_params.state_dict(), "params_ema": md_ema.state_dict()}, out / "maskdcpt_w8.pth")
    torch.save({"params": nf.state_dict()}, out / "nafnet_w8.pth")
    bare = OrderedDict(("module." + k, v) for k, v in md_ema.state_dict().items())
    torch.save(bare, out / "maskdcpt_w8_bare_module.pth")

    # f16 safetensors of params_ema; reference = f32 maths on f16-rounded weights
    sd16 = OrderedDict((k, v.half()) for k, v in md_ema.state_dict().items())
    writer = write_safetensors(sd16, out / "maskdcpt_w8_f16.safetensors")
    md_f16 = R.build_model("maskdcpt", **MASKDCPT_CFG).eval()
    md_f16.load_state_dict({k: v.float() for k, v in sd16.items()}, strict=True)

    # ---------------- self-checks of what was written ----------------
    def same(a, b) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert same(basicsr_load(out / "maskdcpt_w8.pth", None), md_ema.state_dict())
    assert same(basicsr_load(out / "maskdcpt_w8.pth", "params_ema"), md_ema.state_dict())
    assert same(basicsr_load(out / "maskdcpt_w8.pth", "params"), md_params.state_dict())
    assert same(basicsr_load(out / "maskdcpt_w8_bare_module.pth", None), md_ema.state_dict())
    assert same(basicsr_load(out / "nafnet_w8.pth", None), nf.state_dict())  # falls back to params
    rt = read_safetensors(out / "maskdcpt_w8_f16.safetensors")
    assert rt.keys() == sd16.keys() and all(torch.equal(rt[k], sd16[k]) for k in rt)
    assert all(v.dtype == torch.float16 for v in rt.values())
    for k in md_ema.state_dict():
        assert not torch.equal(md_ema.state_dict()[k], md_params.state_dict()[k]), k

    # ---------------- inputs ----------------
    in_37x53 = save_npy("input_37x53.npy", smooth_image(37, 53, 11))
    in_29x41 = save_npy("input_29x41.npy", smooth_image(29, 41, 12))
    in_16x24 = save_npy("input_16x24.npy", smooth_image(16, 24, 13))
    in_96x136 = save_npy("input_96x136.npy", smooth_image(96, 136, 14))
    in_5x7 = save_npy("input_5x7.npy", smooth_image(5, 7, 15))

    def load(name: str) -> np.ndarray:
        return np.load(out / name)

    cases = []
    md_common = dict(family="maskdcpt", **MASKDCPT_CFG)
    nf_common = dict(family="nafnet", **NAFNET_CFG)
    harness_md = (
        "MaskDCPT harness: reflect-pad bottom/right to a multiple of 16 "
        "(torch 'reflect' = mirror without repeating the edge pixel), run, crop to HxW; raw output, not clamped."
    )

    def add(name, model, param_key, inp, net, family, common, note, runner):
        img = load(inp)
        y = runner(net, img)
        assert y.shape == img.shape and y.dtype == np.float32
        oname = save_npy(f"output_{name}.npy", y)
        d64 = f64_diff(net, img, y, family)
        cases.append(
            dict(
                name=name,
                model=model,
                param_key=param_key,
                input=inp,
                output=oname,
                **common,
                note=note,
                f32_vs_f64_max_abs=float(f"{d64:.3e}"),
                output_min=float(f"{float(y.min()):.4f}"),
                output_max=float(f"{float(y.max()):.4f}"),
            )
        )
        return y

    y_a = add(
        "maskdcpt_w8_ema_37x53", "maskdcpt_w8.pth", None, in_37x53, md_ema, "maskdcpt", md_common,
        "Case A. param_key null = BasicSR default: 'params_ema' (falls back to 'params' when absent). " + harness_md,
        R.run_maskdcpt,
    )
    y_b = add(
        "maskdcpt_w8_params_37x53", "maskdcpt_w8.pth", "params", in_37x53, md_params, "maskdcpt", md_common,
        "Case B. Same input as case A but the 'params' copy (different weights). " + harness_md,
        R.run_maskdcpt,
    )
    assert np.abs(y_a - y_b).max() > 0.05
    add(
        "maskdcpt_w8_f16_37x53", "maskdcpt_w8_f16.safetensors", None, in_37x53, md_f16, "maskdcpt", md_common,
        f"safetensors ({writer}), every tensor F16 = params_ema of maskdcpt_w8.pth rounded to float16, "
        "bare keys. Reference computed in float32 from the f16-rounded weights (upcast on load). " + harness_md,
        R.run_maskdcpt,
    )
    add(
        "nafnet_w8_29x41", "nafnet_w8.pth", None, in_29x41, nf, "nafnet", nf_common,
        "Upstream megvii NAFNet layout (encoders.N.M, middle_blks.M, decoders.N.M; LayerNorm2d eps 1e-6). "
        "Checkpoint has only 'params' (default key falls back to it). No external padding: the network itself "
        "zero-pads bottom/right to a multiple of 2**3 = 8 (32x48), global residual with the zero-padded input, crops.",
        R.run_nafnet,
    )
    add(
        "nafnet_w8_16x24", "nafnet_w8.pth", None, in_16x24, nf, "nafnet", nf_common,
        "Upstream NAFNet layout, input already a multiple of 8 (no padding).",
        R.run_nafnet,
    )
    add(
        "nafnet_w8_tlc32_96x136", "nafnet_w8.pth", None, in_96x136, R.use_tlc_(copy.deepcopy(nf), TLC_TRAIN),
        "nafnet", dict(nf_common, tlc_train_size=TLC_TRAIN),
        f"Upstream NAFNet with TLC channel attention (NAFNetLocal, fast_imp=False) for a {TLC_TRAIN}x{TLC_TRAIN} "
        "training crop: each block averages windows of 1.5x the crop scaled to its level (48, 24, 12, 6 pixels "
        "at levels 0-3), smaller than every map of this 96x136 input, instead of the whole map "
        "(reference_nafnet.use_tlc_, checked against megvii's local_arch converter).",
        R.run_nafnet,
    )
    add(
        f"maskdcpt_w8_tlc_sampled{TLC_TRAIN}_96x136", "maskdcpt_w8.pth", None, in_96x136,
        R.use_tlc_(copy.deepcopy(md_ema), TLC_TRAIN, sampled=True), "maskdcpt",
        dict(md_common, tlc_sampled_train_size=TLC_TRAIN),
        f"MaskDCPT's own NAFNet class (TLC with fast_imp=True) for a {TLC_TRAIN}x{TLC_TRAIN} training crop "
        "(params_ema): windows of 48, 24, 12, 6, 3 pixels at levels 0-4, averaged over every 4th, 2nd, 1st, "
        "1st, 1st row and column of the 96x144 padded maps from one step in "
        "(reference_nafnet.use_tlc_(sampled=True), checked against the MaskDCPT fork's AvgPool2d). " + harness_md,
        R.run_maskdcpt,
    )
    add(
        "maskdcpt_w8_ema_96x136", "maskdcpt_w8.pth", None, in_96x136, md_ema, "maskdcpt", md_common,
        "Larger input for tiling tests (params_ema). Reference is the WHOLE image in one pass (96 = 6x16, "
        "136 -> padded 144). A tiled run differs from this because SCA pools over the whole (padded) image. "
        + harness_md,
        R.run_maskdcpt,
    )
    add(
        "maskdcpt_w8_ema_5x7", "maskdcpt_w8.pth", None, in_5x7, md_ema, "maskdcpt", md_common,
        "Tiny input (params_ema). Padding to 16x16 needs pads (11, 9) >= the dimensions (5, 7), which torch's "
        "reflect pad refuses; this case EXTENDS the reference semantics with numpy np.pad(mode='reflect') on the "
        "bottom/right = repeated mirroring without edge repetition (period 2*(n-1)), i.e. index i >= n maps by "
        "reflecting repeatedly. Equal to torch reflect whenever torch allows the pad. Raw output cropped to 5x7.",
        R.run_maskdcpt,
    )
    y_bare = add(
        "maskdcpt_w8_bare_module_37x53", "maskdcpt_w8_bare_module.pth", None, in_37x53, md_ema, "maskdcpt", md_common,
        "Bare state dict (no params/params_ema wrapper), every key prefixed 'module.' (strip it, as BasicSR does). "
        "Same weights as params_ema, expected output identical to case A. " + harness_md,
        R.run_maskdcpt,
    )
    assert np.array_equal(y_a, y_bare)

    manifest = {
        "generator": "scripts/gen_golden.py (reference: scripts/reference_nafnet.py)",
        "regenerate": ".venv-torch/bin/python scripts/gen_golden.py",
        "torch_version": torch.__version__,
        "layout": "inputs and outputs are HxWx3 float32 RGB .npy (C order); inputs in [0,1]; outputs raw (unclamped)",
        "cases": cases,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for c in cases:
        print(f"{c['name']:34s} {c['model']:30s} key={str(c['param_key']):6s} out=[{c['output_min']}, {c['output_max']}] f32-f64={c['f32_vs_f64_max_abs']}")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(cases)} cases to {out} ({total / 1e6:.2f} MB in top-level files)")


if __name__ == "__main__":
    main()
