"""Monkey-patching a kernel process: gevent's, and what it leaves blocking that cells use often.

``gevent.monkey.patch_all()`` makes sockets, ``select``, sleeping, locks,
threads and subprocess waits cooperative. Two things cells use often it
leaves blocking, and a kernel process cannot afford either: a blocked
process answers no request of any kernel it hosts, and reads none of their
output.

* ``os.system``: C's ``system()`` blocks until the command ends, so its output
  reached the cell all at once at the end (ipykernel streams it from a reader
  thread). :func:`patch_process` replaces it with
  :func:`gkernel.system.run_inherited`, which keeps ``system()``'s contract,
  wherever the main thread's hub can wait (elsewhere: the blocking original).
* ``multiprocessing``'s pipes and semaphores. gevent documents that
  ``multiprocessing.Pool`` and ``Queue`` hang once ``threading`` is patched:
  their helper threads become greenlets, and a greenlet that blocks the
  process in a pipe read (``Pool``'s result handler, waiting for the next
  result) or in a semaphore some other greenlet holds (``Pool.terminate``,
  ``Queue.get``) never lets the others run. Here a connection waits for its
  descriptor through the hub when it is not ready, in every process (a
  ``Manager``'s server serves each client in a greenlet). A semaphore that is
  taken is polled between naps of the hub in the kernel process (a POSIX
  semaphore has no descriptor to wait on; the price: a waiter there sees a
  release up to 10 ms late, and loses races against waiters of other
  processes, which sleep in ``sem_wait``), and waited for in ``sem_wait`` in
  slices of 2 ms in a forked child, so that one handed between a ``Pool``'s
  workers is taken at once and a pool used inside a child works too. An
  ``RLock`` belongs to an OS thread, not to a greenlet: two greenlets of one
  thread may both hold it, as before.
"""

import io
import os
import select
import stat
import time

__all__ = ["patch_process"]

#: Longest nap between two tries of a taken semaphore in a kernel process (seconds): the most a
#: release waits to be seen.
SEMAPHORE_POLL_MAX = 0.01
#: Longest wait in ``sem_wait`` in a forked child before its other greenlets get a turn (seconds).
FORKED_SLICE = 0.002


def patch_process():
    """``gevent.monkey.patch_all()``, with one scan of installed entry points instead of 25; then the above.

    Called once, in the main thread, before user code runs.

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
    os.system = _cooperative_system(os.system)
    _patch_multiprocessing(os.getpid())


def _cooperative_system(blocking_system):
    """``os.system`` waited for by the main thread's hub; *blocking_system* where there is none to wait with."""
    import gevent
    from gevent.monkey import get_original

    from .system import run_inherited

    thread_id = get_original("_thread", "get_ident")
    main_thread = thread_id()

    def system(command):
        """Execute *command* in a subshell and return its wait status (cooperative: see gkernel.patching)."""
        # An OS thread (a C library's, or one started with gevent's original _thread) has no hub that
        # reaps children, and the hub itself cannot wait.
        if thread_id() != main_thread or gevent.getcurrent() is gevent.get_hub():
            return blocking_system(command)
        return run_inherited(command)

    return system


def _patch_multiprocessing(kernel_pid):
    """Cooperative ``Connection`` reads and writes, ``SemLock`` acquires in process *kernel_pid*, and
    spawned children (spawn and forkserver start methods) watched by the hub."""
    from multiprocessing import connection, synchronize, util

    import gevent
    from gevent.monkey import get_original
    from gevent.os import _watch_child as watch_child  # what gevent.os.fork_and_watch registers children with
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
        fd = self._handle
        # A writable blocking pipe has room for PIPE_BUF bytes, and a write of more may block: it gets
        # that much at a time. Anything else gets all that is left at once: a non-blocking descriptor
        # takes what fits, and small writes to a TCP socket would meet Nagle's delay (CPython #20540).
        step = select.PIPE_BUF if os.get_blocking(fd) and stat.S_ISFIFO(os.fstat(fd).st_mode) else len(buf)
        view = memoryview(buf)
        while view:
            wait(fd, select.POLLOUT)
            try:
                view = view[os.write(fd, view[:step]):]
            except BlockingIOError:
                pass

    def _recv(self, size):
        buf = io.BytesIO()
        remaining = size
        while remaining > 0:
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
        if semlock.acquire(False):
            return True
        if not block:
            return False
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        in_kernel = os.getpid() == kernel_pid
        nap = 0.0005
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return semlock.acquire(False)
            if in_kernel:
                # The hub stays free for every kernel of the process; a release is seen after the nap.
                gevent.sleep(nap if left is None else min(nap, left))
                nap = min(nap * 2, SEMAPHORE_POLL_MAX)
                if semlock.acquire(False):
                    return True
            else:
                # A forked child (a Pool's worker) waits in sem_wait, so a semaphore handed between
                # workers is taken at once, in slices, letting its other greenlets run in between.
                if semlock.acquire(True, FORKED_SLICE if left is None else min(FORKED_SLICE, left)):
                    return True
                gevent.sleep(0.0001)

    blocking_make_methods = synchronize.SemLock._make_methods

    def _make_methods(self):
        blocking_make_methods(self)
        semlock = self._semlock
        self.acquire = lambda block=True, timeout=None: acquire(semlock, block, timeout)

    blocking_spawnv_passfds = util.spawnv_passfds

    def spawnv_passfds(path, args, passfds):
        gevent.get_hub().loop.install_sigchld()  # before the child can end (see gkernel.system._Spawned)
        pid = blocking_spawnv_passfds(path, args, passfds)
        # As gevent's own fork and posix_spawn do, before the hub runs again: once any child is watched,
        # libev's SIGCHLD handler reaps every child that ends, and only a watched child's status reaches
        # os.waitpid (a spawned worker stayed "alive" forever, and Pool.terminate left it behind).
        watch_child(pid)
        return pid

    connection.Connection._send = _send
    connection.Connection._recv = _recv
    util.spawnv_passfds = spawnv_passfds
    synchronize.SemLock._make_methods = _make_methods
    synchronize.SemLock.__enter__ = lambda self: self.acquire()
