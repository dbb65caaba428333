"""The dispatcher: a two-level priority queue served by one greenlet.

Requests are queued by the channel readers with a priority (control before
shell) and served in arrival order within a priority. Control requests are
handled inline by the dispatcher greenlet and are short. A shell request gets
its own greenlet -- the cell's execution greenlet -- and only one runs at a
time; while it waits on gevent I/O, the dispatcher keeps serving control.

Requests that arrived while a CPU-bound cell held the hub are still unread in
the sockets when it ends, so before starting a shell request the dispatcher
lets the readers take in what was delivered (:func:`settle`): a
control request sent before it is then served first.
"""

from collections import deque

import gevent
from gevent.event import Event

__all__ = ["Dispatcher", "CONTROL", "SHELL", "settle"]

CONTROL, SHELL = 0, 1


def settle(timeout=0.05):
    """Let greenlets woken by I/O that already arrived (the socket readers) run first.

    ``gevent.idle`` returns once the loop has polled and run everything
    pending; bounded because greenlets spinning on ``sleep(0)`` keep the loop
    from ever idling.
    """
    with gevent.Timeout(timeout, False):
        gevent.idle()


class Dispatcher:
    """Serves queued requests with ``handle(item)``; hub-thread only."""

    def __init__(self, handle, spawn_shell, log):
        self._handle = handle
        #: ``spawn_shell(func, item)`` starts the greenlet of a shell request
        self._spawn_shell = spawn_shell
        self.log = log
        self._lanes = (deque(), deque())
        self._wakeup = Event()
        #: the greenlet running the current shell request, if any
        self.shell_greenlet = None
        #: the dispatcher's own greenlet, once started
        self.greenlet = None

    def start(self):
        self.greenlet = gevent.spawn(self._run)

    def stop(self):
        """Stop serving; a shell request still running is killed."""
        glets = [g for g in (self.greenlet, self.shell_greenlet) if g is not None]
        gevent.killall(glets, timeout=1)

    def put(self, priority, item):
        self._lanes[priority].append(item)
        self._wakeup.set()

    def shell_pending(self):
        """How many shell requests wait behind the running one."""
        return len(self._lanes[SHELL])

    def _next(self):
        control, shell = self._lanes
        while True:
            if control:
                return CONTROL, control.popleft()
            if shell and self.shell_greenlet is None:
                settle()
                if not control:
                    return SHELL, shell.popleft()
                continue
            self._wakeup.clear()
            self._wakeup.wait()

    def _run(self):
        while True:
            priority, item = self._next()
            if priority == CONTROL:
                self._serve(item)
            else:
                self.shell_greenlet = self._spawn_shell(self._serve_shell, item)

    def _serve(self, item):
        try:
            self._handle(item)
        except Exception:  # the handler answers errors itself; this is a bug guard
            self.log.exception("unhandled error while serving a request")

    def _serve_shell(self, item):
        try:
            self._serve(item)
        finally:
            self.shell_greenlet = None
            self._wakeup.set()
