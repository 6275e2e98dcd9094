"""Progress on long work: a tqdm bar when tqdm is installed, nothing otherwise, a callable of
the caller's own, or silence when asked."""

import contextlib
import os
import sys
from typing import Callable, Iterator, Optional, Union

Progress = Union[None, bool, Callable[[int, int], None]]

_enabled = os.environ.get("FHEC_PROGRESS", "1") not in ("0", "false", "no", "")


def set_progress(enabled: bool) -> None:
    """Turns the default progress bars on or off for the whole process (the environment
    variable ``FHEC_PROGRESS=0`` turns them off at start)."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def reporter(progress: Progress, desc: str, unit: str) -> Iterator[Optional[Callable[[int, int], None]]]:
    """The callback handed to the native module for one piece of work.

    ``progress``: ``None`` (the default: a tqdm bar when tqdm is importable, progress is
    enabled and stderr is a terminal or a notebook), ``True`` (a tqdm bar if tqdm is
    importable), ``False`` (silent), or a callable ``f(done, total)``.
    """
    if callable(progress):
        yield progress
        return
    if progress is False or (progress is None and not _enabled):
        yield None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        yield None
        return
    if progress is None and not _interactive():
        yield None
        return
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, leave=False)
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
