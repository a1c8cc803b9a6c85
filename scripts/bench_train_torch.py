"""The PyTorch side of scripts/gpu-check-trainer.sh: one NAFNet training step of the
released shape (scripts/reference_nafnet.py, MaskDCPT layout) timed like `trainer bench`:
batch 8 of 128x128 random crops, L1, AdamW (PyTorch's default foreach implementation),
FP16 autocast with GradScaler, EMA update, one random batch kept on the GPU.

    python3 scripts/bench_train_torch.py --steps 100 --warmup 10   # prints one JSON line
    python3 scripts/bench_train_torch.py --device cpu --amp off --width 16 --enc 1,1,1,1 --crop 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference_nafnet as R  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--amp", choices=["fp16", "bf16", "off"], default="fp16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--enc", default="1,1,1,28", help="encoder blocks per level")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    enc = [int(n) for n in args.enc.split(",")]
    net = R.build_model("maskdcpt", args.width, enc, 1, [1] * len(enc)).to(dev)
    ema = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "off": None}[args.amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")
    lq = torch.rand(args.batch, 3, args.crop, args.crop, device=dev)
    gt = torch.rand_like(lq)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            sync()
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float16, enabled=dtype is not None):
            loss = (net(lq).float() - gt).abs().mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(net.parameters()), 1 - 0.999)
    sync()
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "pytorch", "torch": torch.__version__, "amp": args.amp, "batch": args.batch,
                      "crop": args.crop, "steps": args.steps, "ms_per_step": seconds * 1e3 / args.steps,
                      "steps_per_s": args.steps / seconds,
                      "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}))


if __name__ == "__main__":
    main()
