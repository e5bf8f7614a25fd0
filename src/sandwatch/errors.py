"""The one exception type for errors a user can fix.

Every ``SandwatchError`` carries a single line that names the file (or option) at fault
and what to do about it. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations

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
