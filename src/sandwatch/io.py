"""Output files that appear whole or not at all.

Every stage writes through :func:`atomic_output`: the data goes to a temporary name in the
same folder and is renamed over the final name only when the block exits without an
exception, so a killed or failed run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A unique temporary name beside ``path`` that keeps its suffix (drivers look at it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` on success, delete it on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # GDAL may leave side-car files (.aux.xml, .ovr) next to the temporary name.
        for side in tmp.parent.glob(tmp.name + ".*"):
            with contextlib.suppress(OSError):
                side.unlink()
        raise
