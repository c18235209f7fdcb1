"""Ctrl-C that is not lost: CPython drops an exception raised inside a weakref callback or
``__del__`` ("Exception ignored in ..."), so a ``KeyboardInterrupt`` that lands there would let
``train.py`` or the cache tool run on. Within :func:`ctrl_c_remembered` a Ctrl-C is also
remembered, and :func:`raise_if_interrupted`, called at safe points (a training step, a
written cache block), raises it again.
"""

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
