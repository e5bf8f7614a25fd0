"""Accuracy on real imagery: leave-one-scene-out on the two real Indian observations, our
recipe against a plain baseline trained for the same wall time, in the same run.

Protocol (fixed once; nothing in it is chosen by looking at a direction's test scene):

* data: ``../shared/data/india-sandmining``: two real Sentinel-2 true-colour scenes of Indian
  rivers with human mining polygons (High/Low confidence) and a ready river AOI (1 km buffer);
* directions: train on Bhargavi 2018-12 and test on Wainganga 2023-05, and the other way
  round (another river, another season: a dry-season sand bed against a post-monsoon river);
* seeds: 0, 1, 2 (``--seeds``); each seed trains both models afresh;
* ours: ``sandwatch.train.train`` with ``configs/real-rgb.yaml`` (``--config``) on a manifest
  holding only the training observation, its ``best.pt`` predicted on the whole test scene
  with ``sandwatch.predict`` (the checkpoint's window, edge 30, threshold and temperature;
  ``--tta`` also scores the same checkpoint with test-time augmentation, as ``ours+tta``)
  and scored with ``sandwatch.evaluate``;
* baseline: segmentation_models_pytorch ``Unet("resnet18")`` (random init: nothing can be
  downloaded here), per-channel global normalisation (mean/std of the training scene),
  random 256 px crops anywhere in the training scene, flips and rot90, BCE + Dice, AdamW
  (1e-3, wd 1e-4), linear warm-up (5 %) then cosine decay over a **wall-time budget equal to
  our training time in the same run**, batch 8; predicted and scored by the same code as ours
  (window 256, edge 30);
* scores: exact pooled AP, F1 at 0.5, F1 at the checkpoint's threshold and best F1, on the
  whole test scene and inside its river AOI (published evaluation: 30 px border dropped,
  Low-confidence polygons count as mine).

    .venv/bin/pip install -e '.[bench]'                     # benchmark-only dependency (smp)
    .venv/bin/python benchmarks/realdata.py                 # both directions, 3 seeds (about 110 min on 2 cores)
    .venv/bin/python benchmarks/realdata.py --seeds 0 --directions b2w --set optim.steps=100  # smoke run

Prints one row per (direction, seed, model), then mean and spread per direction, and the
ratio of our AP to the baseline's; ``--json FILE`` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "india-sandmining"
SCENES = {"bhargavi": "bhargavi-khordha-2018-12", "wainganga": "wainganga-gondiya-2023-05"}
DIRECTIONS = {"b2w": ("bhargavi", "wainganga"), "w2b": ("wainganga", "bhargavi")}
DATES = {"bhargavi": "2018-12-15", "wainganga": "2023-05-15"}


# ---- data ------------------------------------------------------------------------------------
def manifest_for(data: Path, key: str, split: str, out: Path) -> Path:
    """A one-observation manifest of a real scene (its ready AOI file, no buffer)."""
    from sandwatch.dataset.manifest import Manifest, Observation, save_manifest

    folder = data / SCENES[key]
    obs = Observation(id=key, site=key, date=DATES[key], scene=str(folder / "rgb.tif"),
                      annotations=str(folder / "annotations.geojson"), aoi=str(folder / "rivers.geojson"),
                      cluster=0 if key == "bhargavi" else 1, split=split)
    return save_manifest(Manifest(name=f"realdata-{key}", observations=[obs]), out)


def evaluate(manifest: Path, prob: Path, name: str, threshold: float) -> dict:
    from sandwatch.evaluate import EvalConfig, evaluate_predictions
    from sandwatch.dataset.manifest import load_manifest

    obs = load_manifest(manifest).observations[0]
    res = evaluate_predictions(manifest, {obs.id: prob}, split="val", config=EvalConfig(progress=False), name=name)
    out = {}
    zero = lambda v: 0.0 if v is None else float(v)  # noqa: E731 - F1 is 0 when nothing is predicted mine
    for scope in ("image", "aoi"):
        acc = res.pooled(scope)
        m = acc.metrics(0.5)
        out[scope] = {"ap": zero(m.ap), "f1_05": zero(m.f1), "best_f1": zero(m.best_f1),
                      "best_threshold": m.best_threshold, "f1_thr": zero(acc.metrics(threshold).f1)}
    return out


# ---- ours -------------------------------------------------------------------------------------
def run_ours(config: Path, overrides: list[str], train_manifest: Path, test_manifest: Path, run_dir: Path,
             seed: int, tta: bool = False) -> tuple[list[tuple[str, dict]], float]:
    """Train with the recipe, then score its best.pt (and with ``tta``, the same checkpoint
    predicted with test-time augmentation): ``[(model name, scores), ...]`` and training seconds."""
    from sandwatch.evaluate.core import predict_split
    from sandwatch.models.checkpoint import Checkpoint
    from sandwatch.train.config import load_config
    from sandwatch.train.runner import train

    cfg = load_config(config, [*overrides, f"manifest={train_manifest}", f"run_dir={run_dir}",
                               f"trainer.seed={seed}", "trainer.progress_bar=false"])
    done = run_dir / "trained.json"      # a re-run with the same --out scores finished trainings again
    if done.is_file():
        seconds = json.loads(done.read_text())["train_seconds"]
    else:
        t0 = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - t0
        done.write_text(json.dumps({"train_seconds": seconds}))
    ckpt = Checkpoint.load(run_dir / "checkpoints" / "best.pt")
    out = []
    for name, with_tta in (("ours", False), ("ours+tta", True))[: 2 if tta else 1]:
        found, _, _ = predict_split(ckpt, test_manifest, run_dir / name, split="val", progress=False, tta=with_tta)
        scores = evaluate(test_manifest, next(iter(found.values())), name, ckpt.threshold)
        scores.update({"train_seconds": seconds, "threshold": ckpt.threshold, "temperature": ckpt.temperature,
                       "steps": int(ckpt.metadata.get("global_step", 0)), "epoch": int(ckpt.metadata.get("epoch", 0))})
        out.append((name, scores))
    return out, seconds


# ---- the plain baseline ----------------------------------------------------------------------
class Baseline:
    """segmentation_models_pytorch U-Net (ResNet18), trained the plain way for ``seconds``."""

    window = 256
    batch = 8
    lr = 1e-3
    weight_decay = 1e-4
    warmup = 0.05

    def __init__(self, seed: int):
        import segmentation_models_pytorch as smp

        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.model = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=1)

    @staticmethod
    def load(manifest: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from sandwatch.dataset.manifest import load_manifest
        from sandwatch.imagery import open_scene
        from sandwatch.labels import rasterize_labels

        obs = load_manifest(manifest).observations[0]
        scene = open_scene(obs.scene)
        x, valid = scene.read(bands=("R", "G", "B"))
        mask, _ = rasterize_labels(obs.annotations, scene.grid)
        return x, mask, valid

    def fit(self, manifest: Path, seconds: float, max_steps: int | None = None) -> dict:
        x, mask, valid = self.load(manifest)
        self.mean = x[:, valid].mean(axis=1)
        self.std = x[:, valid].std(axis=1) + 1e-6
        xn = (x - self.mean[:, None, None]) / self.std[:, None, None]
        h, w = mask.shape
        s = self.window
        pad = [(0, 0), (0, max(0, s - h)), (0, max(0, s - w))]
        xn, mask = np.pad(xn, pad, mode="reflect"), np.pad(mask, pad[1:], mode="constant")
        h, w = mask.shape
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.model.train()
        t0 = time.perf_counter()
        steps = 0
        while True:
            frac = steps / max_steps if max_steps else (time.perf_counter() - t0) / seconds
            if frac >= 1:
                break
            lr = self.lr * (frac / self.warmup if frac < self.warmup
                            else 0.5 * (1 + math.cos(math.pi * (frac - self.warmup) / (1 - self.warmup))))
            for g in opt.param_groups:
                g["lr"] = lr
            xb, yb = [], []
            for _ in range(self.batch):
                r, c = self.rng.integers(0, h - s + 1), self.rng.integers(0, w - s + 1)
                xi, yi = xn[:, r:r + s, c:c + s], mask[None, r:r + s, c:c + s]
                d = int(self.rng.integers(0, 8))
                if d & 4:
                    xi, yi = xi[..., ::-1], yi[..., ::-1]
                xi, yi = np.rot90(xi, d & 3, (-2, -1)), np.rot90(yi, d & 3, (-2, -1))
                xb.append(np.ascontiguousarray(xi))
                yb.append(np.ascontiguousarray(yi))
            xt = torch.from_numpy(np.stack(xb)).float()
            yt = torch.from_numpy(np.stack(yb)).float()
            logits = self.model(xt)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt)
            p = torch.sigmoid(logits)
            dice = 1 - (2 * (p * yt).sum() + 1) / (p.sum() + yt.sum() + 1)
            loss = bce + dice
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        return {"steps": steps, "train_seconds": time.perf_counter() - t0}

    def predictor(self):
        from sandwatch.predict import Predictor

        model = self.model.eval()
        mean, std = self.mean.astype(np.float32), self.std.astype(np.float32)

        def normalize(batch: np.ndarray) -> np.ndarray:
            return (batch - mean[:, None, None]) / std[:, None, None]

        def forward(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return torch.sigmoid(model(torch.from_numpy(np.ascontiguousarray(batch, np.float32))))[:, 0].numpy()

        return Predictor(forward, ("R", "G", "B"), self.window, 0.5, name="smp-unet-resnet18", normalize=normalize)


def run_baseline(train_manifest: Path, test_manifest: Path, out: Path, seed: int, seconds: float,
                 max_steps: int | None = None) -> dict:
    from sandwatch.evaluate.core import predict_split

    base = Baseline(seed)
    fit = base.fit(train_manifest, seconds, max_steps)
    found, _, _ = predict_split(base.predictor(), test_manifest, out, split="val", progress=False)
    scores = evaluate(test_manifest, next(iter(found.values())), "baseline", 0.5)
    scores.update(fit)
    scores["threshold"] = 0.5
    return scores


# ---- report -----------------------------------------------------------------------------------
def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def summarise(rows: list[dict]) -> list[str]:
    lines = []
    head = (f"{'direction':<24} {'model':<9} {'AP img':>15} {'AP aoi':>15} {'F1@0.5 img':>15} "
            f"{'F1@thr img':>15} {'bestF1 img':>15} {'bestF1 aoi':>15} {'train s':>8}")
    lines.append(head)
    for d in DIRECTIONS:
        for model in ("ours", "ours+tta", "baseline"):
            sel = [r for r in rows if r["direction"] == d and r["model"] == model]
            if not sel:
                continue
            col = lambda scope, k: _fmt([r[scope][k] for r in sel])  # noqa: E731
            lines.append(f"{d + ' ' + '->'.join(DIRECTIONS[d]):<24} {model:<9} {col('image', 'ap'):>15} "
                         f"{col('aoi', 'ap'):>15} {col('image', 'f1_05'):>15} {col('image', 'f1_thr'):>15} "
                         f"{col('image', 'best_f1'):>15} {col('aoi', 'best_f1'):>15} "
                         f"{statistics.mean(r['train_seconds'] for r in sel):>8.0f}")
        base = [r["image"]["ap"] for r in rows if r["direction"] == d and r["model"] == "baseline"]
        for model in ("ours", "ours+tta"):
            ours = [r["image"]["ap"] for r in rows if r["direction"] == d and r["model"] == model]
            if ours and base:
                diff = statistics.mean(ours) - statistics.mean(base)
                lines.append(f"{'':<24} {model} - baseline AP (image, mean over seeds): {diff:+.3f}  "
                             f"ratio {statistics.mean(ours) / max(statistics.mean(base), 1e-9):.2f}x")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "real-rgb.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a setting of the config (as `sandwatch train --set`)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=list(DIRECTIONS))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--tta", action="store_true",
                    help="also score our checkpoint with test-time augmentation (D4), as ours+tta")
    ap.add_argument("--no-baseline", action="store_true", help="only our recipe (for quick comparisons)")
    ap.add_argument("--baseline-seconds", type=float, default=None,
                    help="baseline budget (default: our training time in the same run)")
    ap.add_argument("--baseline-steps", type=int, default=None,
                    help="exploration only, not the protocol: a fixed number of baseline steps instead of a time "
                         "budget (comparable across runs on a busy machine)")
    ap.add_argument("--no-ours", action="store_true", help="only the baseline (needs --baseline-seconds/-steps)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"no real data at {args.data}: nothing to measure", file=sys.stderr)
        return 2
    if not args.no_baseline:
        try:
            import segmentation_models_pytorch  # noqa: F401
        except ImportError:
            print("the baseline needs segmentation-models-pytorch: .venv/bin/pip install segmentation-models-pytorch",
                  file=sys.stderr)
            return 2
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    work = Path(args.out or tempfile.mkdtemp(prefix="realdata-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"config {args.config} {' '.join('--set ' + o for o in args.overrides)}; torch threads "
          f"{torch.get_num_threads()}; work folder {work}", flush=True)
    rows: list[dict] = []
    for d in args.directions:
        src, dst = DIRECTIONS[d]
        for seed in args.seeds:
            base_dir = work / d / f"seed{seed}"
            base_dir.mkdir(parents=True, exist_ok=True)
            train_m = manifest_for(args.data, src, "train", base_dir / "train.yaml")
            test_m = manifest_for(args.data, dst, "val", base_dir / "test.yaml")
            seconds = 0.0
            if not args.no_ours:
                runs, seconds = run_ours(args.config, args.overrides, train_m, test_m, base_dir / "ours", seed,
                                         args.tta)
                for name, ours in runs:
                    rows.append({"direction": d, "seed": seed, "model": name, **ours})
                    print(f"{d} seed {seed} {name:<9} AP img {ours['image']['ap']:.3f} aoi {ours['aoi']['ap']:.3f} "
                          f"F1@0.5 {ours['image']['f1_05']:.3f} F1@thr({ours['threshold']:.2f}) "
                          f"{ours['image']['f1_thr']:.3f} bestF1 {ours['image']['best_f1']:.3f}  {ours['steps']} "
                          f"steps {seconds:.0f} s", flush=True)
            if not args.no_baseline:
                budget = args.baseline_seconds or seconds
                base = run_baseline(train_m, test_m, base_dir / "baseline", seed, budget, args.baseline_steps)
                rows.append({"direction": d, "seed": seed, "model": "baseline", **base})
                print(f"{d} seed {seed} baseline AP img {base['image']['ap']:.3f} aoi {base['aoi']['ap']:.3f} "
                      f"F1@0.5 {base['image']['f1_05']:.3f} bestF1 {base['image']['best_f1']:.3f}  "
                      f"{base['steps']} steps {base['train_seconds']:.0f} s", flush=True)
    print()
    for line in summarise(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), "overrides": args.overrides,
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
