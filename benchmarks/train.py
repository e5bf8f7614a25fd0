"""Training throughput and the frozen-encoder feature cache.

Figures (printed, and written as JSON with --json):

1. windows per second and the share of step time spent waiting for data (target <= 10 %),
   training a U-Net through the whole pipeline (manifest -> imagery -> labels -> AOI ->
   DataLoader workers -> Lightning) on synthetic demo scenes;
2. epoch time of ``ssl4eo-resnet50`` linear probing (frozen encoder) with and without the
   feature cache, measured on the epoch after the first (the cache is full by then), and
   their ratio (target >= 3x).

    .venv/bin/python benchmarks/train.py                 # ~ a few minutes on 2 CPU cores
    .venv/bin/python benchmarks/train.py --quick         # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch


#: decoders compared for linear probing: the published U-Net decoder of the ResNets (channels =
#: the skips', 48 M trainable parameters, about 5x the encoder's FLOPs) and a light one (1.4 M,
#: the size class of the published SatMAE decoder), channels finest first
DECODERS = (("published decoder 64-256-512-1024", None), ("light decoder 8-16-32-64", [8, 16, 32, 64]))


def demo_manifest(root: Path, sites: int, size: int) -> Path:
    from sandwatch.dataset.manifest import load_manifest, save_manifest
    from sandwatch.synthetic import write_demo_data

    path = write_demo_data(root / "demo", sites=sites, size=size, seed=0, progress=False)
    m = load_manifest(path)
    site_names = m.sites()
    for o in m.observations:  # last site validates, the others train
        o.split = "val" if o.site == site_names[-1] else "train"
    return save_manifest(m, path)


def run(manifest: Path, run_dir: Path, **sections) -> dict:
    from sandwatch.train.config import config_from_dict
    from sandwatch.train.runner import train

    data = {"manifest": str(manifest), "run_dir": str(run_dir), "profile": "cpu",
            "trainer": {"progress_bar": False, "seed": 0}, "tracking": {"backend": "none", "overlays": 0}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    cfg = config_from_dict(data)
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    hist = json.loads((run_dir / "metrics.json").read_text())["throughput"]
    return {"wall_s": wall, "epochs": hist}


def step_costs(reps: int = 5, batch: int = 8, window: int = 160) -> dict:
    """Seconds per training step (forward, backward, AdamW) of ssl4eo-resnet50 linear probing:
    fresh (encoder + decoder) against cached (features from the cache + decoder), measured
    alternately, best of ``reps``."""
    from sandwatch.bands import BandSpec
    from sandwatch.models import build_model, set_trainable
    from sandwatch.train.cache import FeatureCache
    from sandwatch.train.module import SegmentationTask

    res = {}
    for dec_name, dec in DECODERS:
        model = set_trainable(build_model("ssl4eo-resnet50", decoder_channels=dec), True).train()
        task = SegmentationTask(model, arch="ssl4eo-resnet50", band_spec=BandSpec(model.band_spec.bands),
                                window=window, cache=FeatureCache(10**10))
        opt = task.configure_optimizers()
        x = torch.rand(batch, 13, window, window)
        target = (torch.rand(batch, 1, window, window) > 0.9).float()
        weight = torch.ones_like(target)
        keys = torch.tensor([[0, i, 0] for i in range(batch)])
        with torch.no_grad():
            task._cached_logits({"key": keys, "miss": torch.ones(batch, dtype=torch.bool), "image": x,
                                 "target": target, "weight": weight})      # fill the cache
        hit = {"key": keys, "miss": torch.zeros(batch, dtype=torch.bool), "image": None, "target": None,
               "weight": None}

        def fresh():
            opt.zero_grad()
            task.loss_fn(model(x), target, weight).backward()
            opt.step()

        def cached():
            opt.zero_grad()
            logits, t, w = task._cached_logits(hit)
            task.loss_fn(logits, t, w).backward()
            opt.step()

        times = {"fresh": [], "cached": []}
        fresh(), cached()
        for _ in range(reps):
            for name, fn in (("fresh", fresh), ("cached", cached)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        res[dec_name] = dict(best, speedup=best["fresh"] / best["cached"])
        print(f"per step (batch {batch}, {window} px, best of {reps}), {dec_name}: fresh {best['fresh']:.2f} s, "
              f"cached {best['cached']:.2f} s -> {best['fresh'] / best['cached']:.1f}x")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller scenes and fewer windows")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-unet", action="store_true", help="only the feature-cache comparison")
    ap.add_argument("--steps-only", action="store_true", help="only the interleaved per-step comparison")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = 256 if args.quick else 512
    win_unet = 16 if args.quick else 48
    win_probe = 8 if args.quick else 64
    out: dict = {"threads": torch.get_num_threads(), "workers": args.workers}
    if args.steps_only:
        out["probe_step"] = step_costs(reps=3 if args.quick else 5)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = demo_manifest(tmp, sites=3, size=size)

        # 1. throughput of the full pipeline (U-Net, 13 bands, 160 px windows)
        r = None if args.skip_unet else run(manifest, tmp / "unet", model={"arch": "unet", "options": {"width": 16}},
                data={"windows_per_scene": win_unet, "num_workers": args.workers},
                optim={"epochs": 2, "batch_size": 16}, trainer={"limit_val_batches": 2})
        ep = r["epochs"][-1] if r else {"windows_per_s": float("nan"), "data_wait_share": float("nan")}
        out["unet_windows_per_s"] = ep["windows_per_s"]
        out["unet_data_wait_share"] = ep["data_wait_share"]
        r and print(f"U-Net (width 16, 13 bands, 160 px, batch 16, {args.workers} workers): "
              f"{ep['windows_per_s']:.1f} windows/s, data wait {100 * ep['data_wait_share']:.1f} % of step time "
              f"(target <= 10 %)")

        # 2. linear probing of ssl4eo-resnet50, feature cache on / off, two decoders. Epoch 0
        #    fills the cache; epoch 1 is the steady state that every later epoch repeats.
        common = dict(data={"windows_per_scene": win_probe, "num_workers": args.workers},
                      optim={"epochs": 2, "batch_size": 8}, trainer={"limit_val_batches": 1})
        out["probe"] = {}
        for dec_name, dec in DECODERS:
            times = {}
            for name, enabled in (("cache", "auto"), ("fresh", False)):
                r = run(manifest, tmp / f"probe-{name}-{dec is None}",
                        model={"arch": "ssl4eo-resnet50", "freeze_encoder": True,
                               "options": {"decoder_channels": dec}},
                        cache={"enabled": enabled, "storage": "memory"}, **common)
                times[name] = {"first_epoch_s": r["epochs"][0]["train_seconds"],
                               "later_epoch_s": r["epochs"][1]["train_seconds"],
                               "data_wait_share": r["epochs"][1]["data_wait_share"],
                               "windows_per_epoch": r["epochs"][-1]["windows"]}
            ratio = times["fresh"]["later_epoch_s"] / times["cache"]["later_epoch_s"]
            out["probe"][dec_name] = dict(times, speedup=ratio)
            print(f"ssl4eo-resnet50 linear probing, {dec_name}, {times['cache']['windows_per_epoch']} windows/epoch, "
                  f"batch 8:")
            print(f"  fresh windows (no cache): epoch {times['fresh']['later_epoch_s']:.1f} s "
                  f"(first {times['fresh']['first_epoch_s']:.1f} s)")
            print(f"  pool + feature cache    : epoch {times['cache']['later_epoch_s']:.1f} s "
                  f"(first, filling the cache: {times['cache']['first_epoch_s']:.1f} s)")
            print(f"  speed-up with the cache : {ratio:.1f}x (target >= 3x)")
        # 3. the same comparison per training step, interleaved in one process (min of repeats):
        #    robust to other load on a shared machine
        out["probe_step"] = step_costs(reps=3 if args.quick else 5)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
