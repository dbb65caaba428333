"""What runs while a greenlet holds the CPU: control requests, output, other greenlets.

A greenlet that spins the CPU (``while True: pass``, a long pure-Python
loop) never yields, so on a cooperative hub nothing else runs until it
ends: no control request is read, no output is published, no other
greenlet -- nor, in a ``gkernel serve`` host, any other kernel -- gets a turn.
The reference kernel answers from OS threads instead. gkernel keeps one
*virtual* interval timer per process: ``SIGVTALRM`` comes after every
``interval`` seconds of CPU the process used, which costs nothing while
cells wait on I/O. Its handler runs in the main thread, between two bytecodes
of whichever greenlet is running, and when that greenlet works for a cell
(:func:`gkernel.cells.current_cell`) it

1. takes in the cell's kernel's waiting control requests without blocking
   (:meth:`gkernel.kernel.Kernel.take_in_control`); an interrupt request
   raises KeyboardInterrupt right there, in the running code;
2. if the greenlet has held the CPU for a whole interval (the hub has not run
   since the previous tick) and preemption is safe here (below): with the
   kernel's ``time_slicing`` on, yields to the hub (``gevent.idle()``): output
   timers fire, the publisher sends, other greenlets and kernels take their
   turn, and the spinner goes on after them; with it off, publishes the
   kernel's buffered output from right here instead
   (:meth:`gkernel.kernel.Kernel.publish_output_now`).

Where preemption is safe. A greenlet yields only at points it chose, and
gevent code relies on that: between two such points nothing else runs. So
the handler preempts only user code, never the middle of gevent's, zmq's or
gkernel's own work: every frame on the greenlet's stack, from the running
one down to where its cell entered user code (IPython's ``run_code``,
``%time``/``%timeit``, an asyncio task step, the first frame of a spawned
greenlet), must belong to none of :data:`NOT_PREEMPTED`. Library code
outside that list is preempted as under threads. What preemption changes
for user code: two greenlets of user code that share state without a lock
and relied on never being switched between their yields (the cooperative
guarantee) can now interleave wherever one of them spins; and a spinner
holding a *native* lock (``threading.Lock`` without monkey-patching) that
another greenlet then takes blocks the process. Turn it off per kernel with
``--Kernel.time_slicing=False`` or, in a cell, ``%config Kernel.time_slicing =
False``; output and interrupts keep working.

Why reading the control socket from the handler is safe: the socket's
receiving side is used only by the kernel's control reader greenlet, which is
suspended whenever a cell's greenlet runs (it waits for a first frame, and
multipart messages arrive whole), and the read never blocks.

Process-wide: a process has one such timer and handler, the host owns the
watch, armed from :meth:`install` until :meth:`uninstall` (or exit: a
process ending with an armed virtual timer would be killed by it).
"""

import atexit
import asyncio
import signal

import gevent
from gevent import get_hub, getcurrent

from .cells import current_cell

__all__ = ["CpuWatch", "NOT_PREEMPTED", "add_entry_point"]

#: top-level packages whose code is never preempted while on a greenlet's stack
NOT_PREEMPTED = ("gevent", "greenlet", "zmq", "gkernel", "IPython", "asyncio", "threading", "logging",
                 "importlib", "queue", "concurrent", "contextvars", "jupyter_client", "comm", "traitlets",
                 # the debugger (pydevd's modules are top-level)
                 "debugpy", "pydevd", "pydevd_tracing", "pydevd_file_utils", "_pydevd_bundle", "_pydev_bundle")
_NOT_PREEMPTED_PREFIXES = tuple(name + "." for name in NOT_PREEMPTED)

#: code objects whose frames call user code: the stack below them is the kernel's
_ENTRY_POINTS = {asyncio.events.Handle._run.__code__}


def add_entry_point(function):
    """Declare that *function* runs user code, which may be preempted above its frame."""
    _ENTRY_POINTS.add(function.__code__)


def _preemptible(frame):
    """Whether the stack from *frame* down to its entry point is all user code."""
    while frame is not None:
        if frame.f_code in _ENTRY_POINTS:
            return True
        module = frame.f_globals.get("__name__") or ""
        if module in NOT_PREEMPTED or module.startswith(_NOT_PREEMPTED_PREFIXES):
            return False
        frame = frame.f_back
    return True  # the first frame of a spawned greenlet: the greenlet's own function


class CpuWatch:
    """The SIGVTALRM timer and handler of a process (main thread only)."""

    def __init__(self, interval=0.02):
        self.interval = interval
        self._previous = None
        self._hub = None
        self._last_iteration = None
        #: how often the handler yielded, and published output instead (for tests and the bench)
        self.yields = self.publishes = 0

    def install(self):
        self._hub = get_hub()
        self._previous = signal.signal(signal.SIGVTALRM, self._on_tick)
        # Restart interrupted system calls: C code in a cell that does not expect EINTR keeps working.
        signal.siginterrupt(signal.SIGVTALRM, False)
        signal.setitimer(signal.ITIMER_VIRTUAL, self.interval, self.interval)
        atexit.register(self.uninstall)

    def uninstall(self):
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        atexit.unregister(self.uninstall)
        if self._previous is not None:
            signal.signal(signal.SIGVTALRM, self._previous)
            self._previous = None

    def _on_tick(self, signum, frame):
        glet = getcurrent()
        if glet is self._hub:
            return
        cell = current_cell()
        if cell is None:
            return
        kernel = cell.kernel
        kernel.take_in_control()
        # libev counts the hub's loop iterations (libuv has no counter: every tick counts as spinning)
        iteration = getattr(self._hub.loop, "iteration", None)
        spinning = iteration == self._last_iteration
        self._last_iteration = iteration
        if not spinning or not _preemptible(frame):
            return
        if kernel.time_slicing:
            self.yields += 1
            self._yield_to_hub()
        else:
            self.publishes += 1
            kernel.publish_output_now()
        self._last_iteration = getattr(self._hub.loop, "iteration", None)

    @staticmethod
    def _yield_to_hub(passes=3):
        """``gevent.idle()``, a few times: the hub polls, runs timers and ready greenlets, then resumes us.

        One pass runs what is ready now; a request that came in takes three
        (its reader greenlet, the dispatcher, its handler), and with fewer a
        neighbour kernel's round trip takes two slices instead of one.
        (``gevent.sleep(0)`` would not do: the hub would resume the spinner
        from its callback queue before polling anything.) asyncio's running
        loop is per OS thread: a task step being preempted must not leave
        its loop marked as running for the greenlets that run meanwhile.
        """
        running = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        try:
            for _ in range(passes):
                gevent.idle()
        finally:
            asyncio.events._set_running_loop(running)
