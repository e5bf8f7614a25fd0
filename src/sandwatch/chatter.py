"""Library chatter: what the libraries sandwatch drives print on their own, silenced by default.

Lightning announces accelerators, tips and "`Trainer.fit` stopped"; MLflow and Alembic log
their database set-up at INFO; Lightning's MLflow logger warns that the experiment it is
about to create does not exist yet; some dependencies emit deprecation warnings about each
other. None of it tells a user anything about their data. :func:`quiet_libraries` lowers those
loggers and filters the known warnings; ``verbose`` (``sandwatch -v``) leaves everything as the
libraries set it. sandwatch's own warnings are never filtered here.
"""

from __future__ import annotations

import logging
import os
import warnings

#: logger name -> the lowest level still shown by default
NOISY_LOGGERS: dict[str, int] = {
    "lightning": logging.WARNING,
    "lightning.pytorch": logging.WARNING,
    "lightning.fabric": logging.WARNING,
    # Lightning resets "lightning.pytorch" to INFO when it is imported: its info lines go
    # through these two children, which it leaves alone
    "lightning.pytorch.utilities.rank_zero": logging.WARNING,
    "lightning.fabric.utilities.rank_zero": logging.WARNING,
    "lightning.pytorch.loggers.mlflow": logging.ERROR,     # "Experiment ... not found. Creating it."
    "mlflow": logging.WARNING,
    "alembic": logging.WARNING,
    "distributed": logging.WARNING,
}
#: warnings of one library about another, not about the user's run (regular expressions)
KNOWN_WARNINGS: tuple[str, ...] = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
)

_saved: dict[str, int] = {}


def quiet_libraries(verbose: bool = False) -> None:
    """Silence the chatter above (idempotent); ``verbose`` undoes it."""
    if verbose:
        for name, level in _saved.items():
            logging.getLogger(name).setLevel(level)
        _saved.clear()
        warnings.filters[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and f[1] is not None and f[1].pattern in KNOWN_WARNINGS)]
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")   # read when mlflow is imported
    for name, level in NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        _saved.setdefault(name, logger.level)
        if logger.level < level:       # NOTSET (0) included: the root's level does not protect it
            logger.setLevel(level)
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
