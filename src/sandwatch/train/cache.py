"""Feature cache for frozen encoders (linear probing).

When the encoder is frozen its output for a given input never changes, so computing it once
and reusing it leaves only the decoder's work for later epochs. Fresh random windows every
epoch would never repeat, so the cache is paired with a **fixed pool** of windows per scene
(:class:`sandwatch.train.data.PoolWindows`): pool window ``j`` is drawn once from the seed and
its 8 dihedral variants (rot90 x flip) are the cache keys ``(scene, j, variant)``.

Trade-off (``cache.enabled``):

* fresh windows (cache off): every epoch sees ``n`` new locations per scene; 20 epochs see
  ``20 n`` different windows; the encoder runs on every one of them.
* pool + cache (default for a frozen encoder): the run sees ``ceil(n / 8)`` locations per scene
  in their 8 orientations; the encoder runs once per key (the first epoch), later epochs cost
  only reading labels and running the decoder. Less spatial variety, much less compute: good
  for linear probing, where only a small decoder learns. Set ``cache.pool_per_scene`` higher
  for more variety (then the cache fills over several epochs).

The cache is bounded (``cache.max_gb``): least recently used entries are dropped and
recomputed when needed again. ``storage: memory`` keeps tensors in RAM; ``storage: disk``
writes one file per key under the run directory (survives ``--resume``).
Features are stored as bfloat16 by default (half the memory; the decoder sees the rounded
features; on the reference CPU gathering a batch from bfloat16 was much faster than from
float16), float16, or float32 (exact).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

Key = tuple[int, int, int]


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class FeatureCache:
    """A bounded LRU map ``(scene, j, variant) -> list of tensors``: the encoder features of a
    pool window, then its target and loss weight (so a cached item needs no read at all)."""

    def __init__(self, max_bytes: int, storage: str = "memory", directory: str | os.PathLike | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        if storage not in ("memory", "disk"):
            raise ValueError(f"unknown cache storage {storage!r}")
        if storage == "disk" and directory is None:
            raise ValueError("a disk cache needs a directory")
        self.max_bytes = int(max_bytes)
        self.storage = storage
        self.dtype = dtype
        self.dir = Path(directory) if directory is not None else None
        self._index: OrderedDict[Key, int] = OrderedDict()   # key -> bytes, LRU order
        self._mem: dict[Key, list[torch.Tensor]] = {}
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0
        if self.dir is not None and storage == "disk":
            self.dir.mkdir(parents=True, exist_ok=True)
            for f in sorted(self.dir.glob("*.pt")):  # resume: reuse what an earlier run computed
                try:
                    key = tuple(int(v) for v in f.stem.split("_"))
                except ValueError:
                    continue
                self._index[key] = f.stat().st_size  # type: ignore[index]
                self.bytes += self._index[key]  # type: ignore[index]

    def _path(self, key: Key) -> Path:
        return self.dir / f"{key[0]}_{key[1]}_{key[2]}.pt"  # type: ignore[operator]

    def __contains__(self, key: Key) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def keys(self) -> frozenset:
        return frozenset(self._index)

    def get(self, key: Key) -> list[torch.Tensor] | None:
        if key not in self._index:
            return None
        self._index.move_to_end(key)
        self.hits += 1
        if self.storage == "memory":
            return self._mem[key]
        return torch.load(self._path(key), map_location="cpu", weights_only=True)

    def put(self, key: Key, tensors: list[torch.Tensor], exact: list[torch.Tensor] = ()) -> list[torch.Tensor]:
        """Store (a copy of) ``tensors`` in the cache's dtype, followed by ``exact`` as they are
        (labels and weights); returns the stored list (returned even when it does not fit, so
        the caller always sees the same rounding)."""
        stored = [t.detach().to("cpu", self.dtype if t.is_floating_point() else t.dtype).contiguous()
                  for t in tensors] + [t.detach().cpu().contiguous() for t in exact]
        self.misses += 1
        size = _nbytes(stored)
        if size > self.max_bytes:
            return stored
        if key in self._index:
            self._drop(key)
        while self._index and self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._index)))
            self.evictions += 1
        if self.storage == "memory":
            self._mem[key] = stored
        else:
            tmp = self._path(key).with_suffix(".partial")
            torch.save(stored, tmp)
            os.replace(tmp, self._path(key))
        self._index[key] = size
        self.bytes += size
        return stored

    def _drop(self, key: Key) -> None:
        self.bytes -= self._index.pop(key)
        if self.storage == "memory":
            self._mem.pop(key, None)
        else:
            try:
                self._path(key).unlink()
            except FileNotFoundError:
                pass

    def stats(self) -> dict[str, float]:
        total = self.hits + self.misses
        return {"cache_entries": len(self), "cache_gb": self.bytes / 1e9,
                "cache_hit_rate": self.hits / total if total else 0.0, "cache_evictions": self.evictions}
