"""The one exception type for errors a user can fix.

Every ``SandwatchError`` carries a single line that names the file (or option) at fault
and what to do about it. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

import os
import warnings
from os import PathLike


class SandwatchError(Exception):
    """A problem with the user's input that the user can fix.

    Use :meth:`about` to build the message in the house style::

        raise SandwatchError.about("scene.tif", "has 4 bands but 13 band names were given",
                                   "pass --bands with 4 names")
    """

    def __init__(self, message: str):
        # Keep it one line: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))

    @classmethod
    def about(cls, what: str | PathLike | None, problem: str, fix: str | None = None) -> "SandwatchError":
        head = f"{what}: {problem}" if what is not None else problem
        return cls(f"{head}; {fix}" if fix else head)


_warned: set[tuple[str, str]] = set()


def warn_once(key: str, source: object, message: str, category: type[Warning] = UserWarning,
              stacklevel: int = 3) -> bool:
    """Warn about a file once per run, not once per read (a label file is read by every
    DataLoader worker of every epoch). ``source`` that is not a path warns every time. The CLI
    starts each command with :func:`forget_warnings`; a library user's run is the process.
    Returns whether it warned."""
    if isinstance(source, (str, PathLike)):
        try:
            name = os.path.realpath(os.fspath(source))
        except (TypeError, ValueError, OSError):
            name = str(source)
        if (key, name) in _warned:
            return False
        _warned.add((key, name))
    warnings.warn(message, category, stacklevel=stacklevel + 1)
    return True


def forget_warnings() -> None:
    """Start a new run: every file may be warned about once again."""
    _warned.clear()
