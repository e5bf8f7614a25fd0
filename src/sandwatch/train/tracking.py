"""Experiment tracking: MLflow in the run directory by default; W&B, TensorBoard, CSV or none.

MLflow stores runs in ``RUN/mlflow.db`` (SQLite) and artifacts in ``RUN/mlartifacts``, so::

    mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db

shows the run (config as parameters, metrics per epoch, PR curves and prediction overlays as
artifacts). A resumed run continues the same MLflow run (its id is kept in ``RUN/tracking.json``).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from sandwatch.errors import SandwatchError


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def make_logger(cfg, run_dir: Path, resume: bool = False):
    """The Lightning logger for ``cfg.tracking.backend`` (False for ``none``)."""
    backend = cfg.tracking.backend
    run_dir = Path(run_dir)
    state_file = run_dir / "tracking.json"
    state = json.loads(state_file.read_text()) if (resume and state_file.is_file()) else {}
    name = cfg.tracking.run_name or run_dir.name
    if backend == "none":
        return False
    if backend == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(run_dir, name="csv", version=0)
    if backend == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        try:
            import alembic  # noqa: F401  (the SQLite store needs it)
        except ImportError:
            raise SandwatchError.about("tracking.backend", "mlflow's SQLite store needs the 'alembic' package",
                                       "pip install alembic, or use --set tracking.backend=csv") from None
        logger = MLFlowLogger(experiment_name=cfg.tracking.experiment, run_name=name,
                              tracking_uri=f"sqlite:///{run_dir.resolve()}/mlflow.db",
                              artifact_location=(run_dir.resolve() / "mlartifacts").as_uri(),
                              run_id=state.get("mlflow_run_id"))
        state["mlflow_run_id"] = logger.run_id
        state_file.write_text(json.dumps(state))
        return logger
    if backend == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(run_dir, name="tensorboard", version=0)
        except ModuleNotFoundError:
            raise SandwatchError.about("tracking.backend", "tensorboard is not installed",
                                       "pip install tensorboardX (or tensorboard), or use mlflow (the default)") from None
    if backend == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise SandwatchError.about("tracking.backend", "wandb is not installed",
                                       "pip install wandb, or use mlflow (the default)") from None
        from lightning.pytorch.loggers import WandbLogger

        # the run id is chosen here and kept in RUN/tracking.json, so --resume continues the same W&B run
        run_id = state.get("wandb_id") or uuid.uuid4().hex[:8]
        logger = WandbLogger(project=cfg.tracking.experiment, name=name, save_dir=str(run_dir),
                             offline=cfg.tracking.wandb_offline, id=run_id, resume="allow")
        state["wandb_id"] = run_id
        state_file.write_text(json.dumps(state))
        return logger
    raise SandwatchError.about("tracking.backend", f"unknown backend {backend!r}", "use mlflow, wandb, tensorboard, csv or none")


def finish_logger(logger) -> None:
    """Close what a back-end leaves open after ``fit``: a W&B run is finished (its summary
    written, so ``wandb sync`` uploads an offline run whole); the others need nothing."""
    from lightning.pytorch.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and logger._experiment is not None:
        logger.experiment.finish()


def log_config(logger, cfg) -> None:
    if not logger:
        return
    params = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
              for k, v in _flatten(cfg.model_dump(mode="json")).items()}
    logger.log_hyperparams(params)


def _rgb(image: np.ndarray, band_names) -> np.ndarray:
    names = list(band_names)
    idx = []
    for want in (("R", "B04"), ("G", "B03"), ("B", "B02")):
        idx.append(next((names.index(w) for w in want if w in names), None))
    if any(i is None for i in idx):
        idx = [0, 0, 0]
    rgb = np.stack([image[i] for i in idx], -1)
    lo, hi = np.percentile(rgb, 2), np.percentile(rgb, 98)
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)


def log_figure(module, fig, name: str) -> None:
    """Save ``fig`` under RUN/plots and send it to the tracking backend."""
    import matplotlib.pyplot as plt

    if module.plots_dir is not None:
        module.plots_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(module.plots_dir / name, dpi=80)
    logger = module.logger
    try:
        from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

        if isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, fig, f"plots/{name}")
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig, module.current_epoch)
        elif isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log({name: wandb.Image(fig)})
    finally:
        plt.close(fig)


def log_validation_plots(module, curve, overlays, vals) -> None:
    """PR curve and a few overlays (true colour | probability | label) of one validation."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epoch = module.current_epoch
    if curve is not None:
        prec, rec, _ = curve
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(rec, prec)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"epoch {epoch}: AP {vals.get('val_ap', 0):.3f}")
        log_figure(module, fig, f"pr_curve_epoch{epoch:03d}.png")
    if overlays:
        fig, axes = plt.subplots(len(overlays), 3, figsize=(7.5, 2.5 * len(overlays)), squeeze=False)
        for row, (img, prob, target) in zip(axes, overlays):
            row[0].imshow(_rgb(img, module.band_spec.bands))
            row[1].imshow(prob, vmin=0, vmax=1, cmap="magma")
            row[2].imshow(target, vmin=0, vmax=1, cmap="gray")
            for a in row:
                a.set_axis_off()
        axes[0][0].set_title("image")
        axes[0][1].set_title("P(mine)")
        axes[0][2].set_title("label")
        fig.tight_layout()
        log_figure(module, fig, f"overlays_epoch{epoch:03d}.png")
