"""Monkey-patching a kernel process: gevent's, and what it leaves blocking that cells use often.

``gevent.monkey.patch_all()`` makes sockets, ``select``, sleeping, locks,
threads and subprocess waits cooperative. ``os.system`` it leaves alone: C's
``system()`` blocks the process until the command ends, so the hub could not
read the command's captured output (it reached the cell all at once at the
end, where ipykernel streams it from a reader thread) and every other
greenlet of the process, a neighbour kernel of a host included, stood still.
:func:`patch_all_once` replaces it with :func:`gkernel.system.run_inherited`,
which waits for the command cooperatively and keeps ``system()``'s contract
(see there).
"""

import os

__all__ = ["patch_all_once"]


def patch_all_once():
    """``gevent.monkey.patch_all()``, with one scan of installed entry points instead of 25; then ``os.system``.

    gevent asks ``importlib.metadata.entry_points`` for its plugins before
    patching each module; every call re-reads the metadata of every installed
    distribution, which made patching the largest part of kernel start-up
    (about 110 ms of 180 in the test environment). Nothing is installed while
    patch_all runs, so one scan answers every call: plugins are honoured as
    before. The original function is restored afterwards.
    """
    from importlib import metadata

    from gevent import monkey

    original = metadata.entry_points
    scanned = original()

    def entry_points(**params):
        return scanned.select(**params) if params else scanned

    metadata.entry_points = entry_points
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = original
    os.system = system


def system(command):
    """Execute *command* in a subshell, waited for by gevent's hub (``os.system`` in a kernel process)."""
    from .system import run_inherited

    return run_inherited(command)
