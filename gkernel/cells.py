"""Which cell is the current greenlet working for?

Every request the kernel serves runs in a greenlet started by
:func:`spawn_in_cell`, which gives it a spawn tree of its own: gevent shares a
greenlet's ``spawn_tree_locals`` dict with every greenlet it spawns, directly
or transitively. The :class:`Cell` lives in that dict, so output and display
calls from any greenlet a cell spawned find that cell -- also after the cell
finished and its own greenlet is gone.

asyncio tasks run in whatever greenlet runs their loop, so the cell is also
kept in a context variable, :data:`CELL_VAR`: the request greenlets of a
kernel set it, and a task copies the context of the code that created it.
It is looked at first, so a task writes to the cell that created it
wherever it runs.

Real OS threads have no spawn tree: :func:`follow_threads` makes
``threading.Thread.start`` note the starting code's cell on the thread, so
output of a thread a cell started (with monkey-patching off, or a C library's
thread that runs Python code) goes to that cell too.

Greenlets spawned from the hub (a gevent server's connection handlers, for
example) belong to no cell; callers treat that case themselves.
Nothing here is per-kernel state: a Cell names its kernel.
"""

import gc
import threading
import time
from contextvars import ContextVar

from gevent import Greenlet, getcurrent

__all__ = ["Cell", "spawn_in_cell", "current_cell", "cell_greenlets", "follow_threads", "CELL_KEY",
           "CELL_VAR", "redirect_current", "restore_current"]

#: the key of the Cell in a spawn tree's locals
CELL_KEY = "gkernel.cell"
_THREAD_ATTR = "_gkernel_cell"
#: the cell of the code running in a context (set by request greenlets; copied by asyncio tasks)
CELL_VAR = ContextVar("gkernel.cell", default=None)


class Cell:
    """The kernel and request a piece of running code belongs to."""

    __slots__ = ("kernel", "parent", "idents", "allow_stdin", "execution_count", "started", "silent", "error",
                 "error_in_display")

    def __init__(self, kernel, parent, idents=()):
        self.kernel = kernel
        #: the request message dict: its header is the parent header of
        #: everything published for this cell
        self.parent = parent
        #: the requesting client's routing identities (where input requests go)
        self.idents = idents
        #: whether input() may ask the client: set by execute_request, cleared when the request ends
        self.allow_stdin = False
        #: the In[n] of an execute request that stores history, else None
        self.execution_count = None
        #: when the request started (time.monotonic())
        self.started = time.monotonic()
        #: an execute request's: whether it is silent (its errors are not published), the error
        #: content of its last traceback, whether that came from formatting its result (it then failed)
        self.silent = False
        self.error = None
        self.error_in_display = False


def spawn_in_cell(cell, func, *args, context=None):
    """Start ``func(*args)`` in a new greenlet that roots a spawn tree owned by *cell*.

    *context*: the :class:`contextvars.Context` it runs in (default: a new, empty one).
    """
    glet = Greenlet(func, *args)
    glet.spawn_tree_locals = {CELL_KEY: cell}
    if context is not None:
        glet.gr_context = context
    glet.start()
    return glet


def current_cell():
    """The cell the current context, greenlet or thread works for, or None (hub, unrelated code)."""
    cell = CELL_VAR.get()
    if cell is not None:
        return cell
    tree = getattr(getcurrent(), "spawn_tree_locals", None)
    if tree is not None:
        return tree.get(CELL_KEY)
    # Not a gevent Greenlet: a thread's main greenlet, or the hub.
    return getattr(threading.current_thread(), _THREAD_ATTR, None)


def redirect_current(cell):
    """From now on, the calling greenlet (and what it spawns) or thread works for *cell*.

    Returns a token for :func:`restore_current`. A greenlet gets a spawn tree
    of its own: the tree it leaves, with the cell that rooted it, is unchanged.
    """
    glet = getcurrent()
    if getattr(glet, "spawn_tree_locals", None) is not None:
        where = ("tree", glet, glet.spawn_tree_locals)
        glet.spawn_tree_locals = {**glet.spawn_tree_locals, CELL_KEY: cell}
    else:
        thread = threading.current_thread()
        where = ("thread", thread, getattr(thread, _THREAD_ATTR, None))
        setattr(thread, _THREAD_ATTR, cell)
    return where, CELL_VAR.set(cell)


def restore_current(token):
    """Undo :func:`redirect_current`."""
    (kind, owner, previous), var_token = token
    CELL_VAR.reset(var_token)
    if kind == "tree":
        owner.spawn_tree_locals = previous
    else:
        setattr(owner, _THREAD_ATTR, previous)


def cell_greenlets(kernels):
    """Live greenlets that cells of ``kernels`` spawned: they outlive their cells, not their kernel.

    gevent keeps no registry of greenlets, so they are found the way gevent's
    own GreenletTree finds them, through the garbage collector: one pass over
    the heap, however many kernels end together.
    """
    kernels = set(kernels)

    def spawned_here(obj):
        tree = getattr(obj, "spawn_tree_locals", None)
        cell = tree.get(CELL_KEY) if tree else None
        return cell is not None and cell.kernel in kernels

    return [obj for obj in gc.get_objects() if isinstance(obj, Greenlet) and not obj.dead and spawned_here(obj)]


def follow_threads():
    """Make threads remember the cell that started them (process-wide, idempotent)."""
    start = threading.Thread.start
    if getattr(start, "_gkernel", False):
        return

    def start_in_cell(thread):
        setattr(thread, _THREAD_ATTR, current_cell())
        return start(thread)

    start_in_cell._gkernel = True
    threading.Thread.start = start_in_cell
