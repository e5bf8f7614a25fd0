"""Model zoo speed on CPU: milliseconds per 160x160 window, parameters, FLOPs per pixel.

For each model (full size, published options) a batch of 8 windows of 160x160 goes through
the network in float32 and under CPU bfloat16 autocast; the table gives the time per window,
the bf16 speed-up (the ratio against the float32 baseline measured in the same run) and the
largest difference of the bf16 logits and probabilities from float32.

    .venv/bin/python benchmarks/models.py                 # all models
    .venv/bin/python benchmarks/models.py --models unet,satmae-base --repeats 3
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from sandwatch.models import MODELS, build_model, count_parameters, set_trainable


def timed(model, x, repeats, bf16):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        y = model(x)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            y = model(x)
            times.append(time.perf_counter() - t)
    return min(times), y.float()


def flops_per_pixel(model, window):
    x = torch.rand(1, len(model.band_spec.bands), window, window)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / window**2


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--window", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (best is kept)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, window {args.window}, "
          f"bf16 CPU support: {torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name).eval()
        set_trainable(model, MODELS[name].freeze_encoder)
        x = torch.rand(args.batch, len(model.band_spec.bands), args.window, args.window)
        fpp = flops_per_pixel(model, args.window)
        t32, y32 = timed(model, x, args.repeats, bf16=False)
        t16, y16 = timed(model, x, args.repeats, bf16=True)
        row = {
            "model": name,
            "parameters": count_parameters(model),
            "trainable": count_parameters(model, trainable_only=True),
            "gflops_per_window": fpp * args.window**2 / 1e9,
            "kflops_per_pixel": fpp / 1e3,
            "ms_per_window_fp32": 1e3 * t32 / args.batch,
            "ms_per_window_bf16": 1e3 * t16 / args.batch,
            "bf16_speedup": t32 / t16,
            "max_abs_logit_diff": float((y32 - y16).abs().max()),
            "max_abs_prob_diff": float((torch.sigmoid(y32) - torch.sigmoid(y16)).abs().max()),
            "logit_range": float(y32.abs().max()),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model, x, y32, y16
    head = ("| model | params | trainable (default) | GFLOP/window | kFLOP/px | ms/window fp32 | ms/window bf16 "
            "| bf16 speed-up | max abs logit diff | max abs prob diff |")
    print()
    print(head)
    print("|---" * 10 + "|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters'] / 1e6:.2f} M | {r['trainable'] / 1e6:.2f} M | "
              f"{r['gflops_per_window']:.1f} | {r['kflops_per_pixel']:.0f} | {r['ms_per_window_fp32']:.0f} | "
              f"{r['ms_per_window_bf16']:.0f} | {r['bf16_speedup']:.2f}x | {r['max_abs_logit_diff']:.3g} | "
              f"{r['max_abs_prob_diff']:.3g} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
