"""Monkey-patching a kernel process: gevent's, and what it leaves blocking that cells use often.

``gevent.monkey.patch_all()`` makes sockets, ``select``, sleeping, locks,
threads and subprocess waits cooperative. Two things cells use often it
leaves blocking, and a kernel process cannot afford either: a blocked
process answers no request of any kernel it hosts, and reads none of their
output.

* ``os.system``: C's ``system()`` blocks until the command ends, so its output
  reached the cell all at once at the end (ipykernel streams it from a reader
  thread). :func:`patch_all_once` replaces it with
  :func:`gkernel.system.run_inherited`, which keeps ``system()``'s contract.
* ``multiprocessing``'s pipes and semaphores. gevent documents that
  ``multiprocessing.Pool`` and ``Queue`` hang once ``threading`` is patched:
  their helper threads become greenlets, and a greenlet that blocks the
  process in a pipe read (``Pool``'s result handler, waiting for the next
  result) or in a semaphore some other greenlet holds (``Pool.terminate``,
  ``Queue.get``) never lets the others run. Here a connection waits for its
  descriptor through the hub when it is not ready, and a semaphore that is
  taken is polled between naps of the hub instead of waited for in
  ``sem_wait`` (a POSIX semaphore has no descriptor to wait on). Connections
  wait through the hub in forked children too (a ``Manager``'s server serves
  each client in a greenlet there); semaphores block there as before, so one
  handed between a ``Pool``'s workers is seen at once.
"""

import io
import os
import select
import time

__all__ = ["patch_all_once"]

#: Longest nap between two tries of a taken semaphore (seconds): the most a release waits to be seen.
SEMAPHORE_POLL_MAX = 0.01


def patch_all_once():
    """``gevent.monkey.patch_all()``, with one scan of installed entry points instead of 25; then the above.

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
    _patch_multiprocessing(os.getpid())


def system(command):
    """Execute *command* in a subshell, waited for by gevent's hub (``os.system`` in a kernel process)."""
    from .system import run_inherited

    return run_inherited(command)


def _patch_multiprocessing(kernel_pid):
    """Cooperative ``Connection`` reads and writes, and ``SemLock`` acquires in process *kernel_pid*."""
    from multiprocessing import connection, synchronize

    import gevent
    from gevent.monkey import get_original
    from gevent.socket import wait_read, wait_write

    native_poll = get_original("select", "poll")
    hub_wait = {select.POLLIN: wait_read, select.POLLOUT: wait_write}

    def wait(fd, event):
        """Until *fd* is ready for *event*; through the hub unless it already is."""
        poller = native_poll()
        poller.register(fd, event)
        if not poller.poll(0):
            hub_wait[event](fd)

    # Both also serve descriptors that are non-blocking: a socket gevent made (Manager's connections)
    # stays non-blocking after detach(), where the stock loops failed with EAGAIN, in any process.
    def _send(self, buf):
        view = memoryview(buf)
        while view:
            wait(self._handle, select.POLLOUT)
            try:
                # Writable means room for PIPE_BUF bytes (a pipe) or more (a socket): this does not block.
                view = view[os.write(self._handle, view[:select.PIPE_BUF]):]
            except BlockingIOError:
                pass

    def _recv(self, size):
        buf = io.BytesIO()
        remaining = size
        while remaining:
            wait(self._handle, select.POLLIN)
            try:
                chunk = os.read(self._handle, remaining)
            except BlockingIOError:
                continue
            if not chunk:  # as Connection._recv says it
                if remaining == size:
                    raise EOFError
                raise OSError("got end of file during message")
            buf.write(chunk)
            remaining -= len(chunk)
        return buf

    def acquire(semlock, block=True, timeout=None):
        if os.getpid() != kernel_pid:
            return semlock.acquire(block, timeout)
        if semlock.acquire(False):
            return True
        if not block:
            return False
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        nap = 0.0005
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            gevent.sleep(nap if left is None else max(min(nap, left), 0))
            if semlock.acquire(False):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            nap = min(nap * 2, SEMAPHORE_POLL_MAX)

    blocking_make_methods = synchronize.SemLock._make_methods

    def _make_methods(self):
        blocking_make_methods(self)
        semlock = self._semlock
        self.acquire = lambda block=True, timeout=None: acquire(semlock, block, timeout)

    connection.Connection._send = _send
    connection.Connection._recv = _recv
    synchronize.SemLock._make_methods = _make_methods
    synchronize.SemLock.__enter__ = lambda self: self.acquire()
