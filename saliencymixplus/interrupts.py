"""A Ctrl-C that CPython drops (raised inside a weakref callback or ``__del__``) is remembered
within :func:`ctrl_c_remembered` and raised again by :func:`raise_if_interrupted` at a safe point
(docs/design.md, "Training", exit codes)."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["ctrl_c_remembered", "raise_if_interrupted"]

_ctrl_c = False  # a plain flag: a lock (threading.Event) taken again by the handler would deadlock


def _on_ctrl_c(signum, frame):
    global _ctrl_c
    _ctrl_c = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_remembered():
    """Within: Ctrl-C raises ``KeyboardInterrupt`` as usual and is remembered for
    :func:`raise_if_interrupted`. Only where SIGINT has Python's default handler, in the main
    thread (elsewhere it does nothing)."""
    global _ctrl_c
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _ctrl_c = False
    signal.signal(signal.SIGINT, _on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _ctrl_c = False


def raise_if_interrupted() -> None:
    """``KeyboardInterrupt`` when a Ctrl-C came within :func:`ctrl_c_remembered` (see there)."""
    global _ctrl_c
    if _ctrl_c:
        _ctrl_c = False
        raise KeyboardInterrupt
