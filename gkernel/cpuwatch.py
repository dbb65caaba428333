"""Control requests while a cell holds the CPU, read by a CPU-time signal.

A cell that spins the CPU (``while True: pass``) never yields, so no greenlet
reads the control socket, and an ``interrupt_request`` (interrupt mode
``message``) would wait for the cell to end. The reference kernel reads
control in a thread of its own. gkernel arms a *virtual* interval timer while
a shell request runs instead: ``SIGVTALRM`` comes only after the process has
used ``interval`` seconds of CPU, that is, only while something spins, and
costs nothing while cells wait on I/O. Its handler runs in the main thread,
between two bytecodes of whichever greenlet is running; when that greenlet
works for a cell, the cell's kernel takes in its waiting control requests
without blocking (:meth:`gkernel.kernel.Kernel.take_in_control`), and an
interrupt request raises KeyboardInterrupt right there, in the cell.

Why reading the socket there is safe: the socket's receiving side is used
only by the kernel's control reader greenlet, which is suspended whenever a
cell's greenlet runs (it waits for a first frame, and multipart messages
arrive whole), and the read never blocks. The handler does nothing in the
hub or in the kernel's own greenlets.

Process-wide: a process has one such timer. The host owns the watch and
gives it to its kernels; it is armed while at least one cell runs.
"""

import signal

from .cells import current_cell

__all__ = ["CpuWatch"]


class CpuWatch:
    """The SIGVTALRM timer and handler of a process (main thread only)."""

    def __init__(self, interval=0.02):
        self.interval = interval
        self._running = 0
        self._previous = None

    def install(self):
        self._previous = signal.signal(signal.SIGVTALRM, self._on_tick)

    def uninstall(self):
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        if self._previous is not None:
            signal.signal(signal.SIGVTALRM, self._previous)

    def cell_started(self):
        self._running += 1
        if self._running == 1:
            signal.setitimer(signal.ITIMER_VIRTUAL, self.interval, self.interval)

    def cell_finished(self):
        self._running -= 1
        if self._running == 0:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)

    @staticmethod
    def _on_tick(signum, frame):
        cell = current_cell()
        if cell is not None:
            cell.kernel.take_in_control()
