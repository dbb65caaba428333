"""Which cell is the current greenlet working for?

Every request the kernel serves runs in a greenlet started by
:func:`spawn_in_cell`, which gives it a spawn tree of its own: gevent shares a
greenlet's ``spawn_tree_locals`` dict with every greenlet it spawns, directly
or transitively. The :class:`Cell` lives in that dict, so output and display
calls from any greenlet a cell spawned find that cell -- also after the cell
finished and its own greenlet is gone.

Greenlets spawned from the hub (a gevent server's connection handlers, for
example) belong to no cell; callers treat that case themselves.
Nothing here is per-kernel state: a Cell names its kernel.
"""

from gevent import Greenlet, getcurrent

__all__ = ["Cell", "spawn_in_cell", "current_cell"]

_KEY = "gkernel.cell"


class Cell:
    """The kernel and request a piece of running code belongs to."""

    __slots__ = ("kernel", "parent")

    def __init__(self, kernel, parent):
        self.kernel = kernel
        #: the request message dict: its header is the parent header of
        #: everything published for this cell
        self.parent = parent


def spawn_in_cell(cell, func, *args):
    """Start ``func(*args)`` in a new greenlet that roots a spawn tree owned by *cell*."""
    glet = Greenlet(func, *args)
    glet.spawn_tree_locals = {_KEY: cell}
    glet.start()
    return glet


def current_cell():
    """The cell the current greenlet works for, or None (hub, unrelated code)."""
    tree = getattr(getcurrent(), "spawn_tree_locals", None)
    return tree.get(_KEY) if tree else None
