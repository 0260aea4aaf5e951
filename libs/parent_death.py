"""Children that die with their parent: Linux's PR_SET_PDEATHSIG, for the sandbox's children and pg_receivewal.

The kernel sends the signal when the *thread* that started the child ends, not the whole parent process: start
such children from a thread that lives as long as the parent (a worker's threads, a CLI's main thread).
"""

from __future__ import annotations

import ctypes
import functools
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def kill_when_parent_dies() -> Callable[[], object] | None:
    """A function that, called in a child, has the kernel SIGKILL that child when its parent dies; None where
    there is no prctl (not Linux).

    It is resolved here, in the parent, so that it can serve as a ``preexec_fn``: between fork and exec the
    child may call a function but should not load a library.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return functools.partial(prctl, _PR_SET_PDEATHSIG, signal.SIGKILL)
