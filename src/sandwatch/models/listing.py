"""What ``sandwatch models`` lists, without importing torch when it can.

Counting parameters means building every model (on the meta device, but still torch, timm
and torchvision imported: seconds of CPU). The listing depends only on the model code, so
it is kept in a small JSON file in the user's cache folder, keyed by the sandwatch version and
the size and modification time of every module of this package: any change to a family
module makes a new key, and the first call after it builds the table again. Nothing here
imports torch unless the cache misses.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sandwatch import __version__


def cache_folder() -> Path:
    """``$SANDWATCH_CACHE``, else ``$XDG_CACHE_HOME/sandwatch``, else ``~/.cache/sandwatch``."""
    if os.environ.get("SANDWATCH_CACHE"):
        return Path(os.environ["SANDWATCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "sandwatch"


def listing_key() -> str:
    """Version + (name, size, mtime) of every module of :mod:`sandwatch.models`."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def zoo_listing(use_cache: bool = True) -> dict[str, Any]:
    """``{"models": parameter_table rows, "layouts": [{"name", "description"}]}`` for the zoo.

    The cache holds the zoo's own models only; in a process that has already imported the zoo
    (and may have registered plug-ins) the table is built from what is registered, and cached
    only when that is exactly the zoo's own list."""
    import sys

    path = cache_folder() / f"models-{listing_key()}.json"
    if use_cache and "sandwatch.models.zoo" not in sys.modules:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    from sandwatch.models.registry import LAYOUTS, parameter_table
    from sandwatch.models.zoo import BUILTIN

    data = {"models": parameter_table(),
            "layouts": [{"name": lay.name, "description": lay.description} for lay in LAYOUTS.values()]}
    if [row["name"] for row in data["models"]] != list(BUILTIN):
        return data
    try:    # a cache is a convenience: a read-only home must not stop the listing
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass
    return data
