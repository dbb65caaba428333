"""The heartbeat: one real OS thread echoing the pings of every kernel of a process.

This is the one place gkernel uses a thread. Greenlets cannot run while a
cell spins the CPU (or a C call holds the GIL), but a heartbeat must keep
answering then, or clients declare the kernel dead. A native
``zmq.proxy_steerable`` runs in C with the GIL released, so it echoes pings
no matter what the main thread is doing.

One thread and one ROUTER socket serve every kernel, however many a
``gkernel serve`` host runs: each kernel's heartbeat endpoint is one more
``bind`` of that socket, and a ROUTER sends each echo back on the connection
the ping came in on. ``unbind`` closes the endpoint's listener and its
connections, so a closed kernel stops answering at once.

Thread affinity: the socket belongs to the heartbeat thread once
:meth:`Heartbeat.start` returns. Binding and unbinding must then happen in
that thread: :meth:`Heartbeat.run_on_socket` queues the call, stops the proxy
with its control socket, and waits (well under a millisecond) while the
thread runs it and restarts the proxy. The control socket's sending end is
the calling (main) thread's. The thread is started with the *original*
``_thread.start_new_thread``: after ``monkey.patch_all()``,
``threading.Thread`` would make a greenlet. It blocks every signal: they are
for the main thread, and an EINTR would end the proxy.
"""

import signal
from collections import deque

import zmq
from gevent.monkey import get_original

__all__ = ["Heartbeat"]

_start_new_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")

#: the control message that makes the proxy return
_PAUSE = b"TERMINATE"


def _stopped_socket(sock):
    raise RuntimeError("the heartbeat has stopped")


class _Call:
    """A call queued for the heartbeat thread, and its outcome."""

    __slots__ = ("func", "result", "error", "done")

    def __init__(self, func):
        self.func = func
        self.result = self.error = None
        self.done = _allocate_lock()
        self.done.acquire()

    def run(self, sock, func=None):
        try:
            self.result = (func or self.func)(sock)
        except Exception as exc:
            self.error = exc
        self.done.release()


class Heartbeat:
    """Echoes every message received on any endpoint of one ROUTER socket back to its sender.

    ``context`` is a native ``zmq.Context`` (the application owns and destroys it).
    """

    def __init__(self, context):
        self._socket = context.socket(zmq.ROUTER)
        self._socket.linger = 0
        # Accept a reconnecting client under the same identity, as on the other channels.
        self._socket.router_handover = 1
        endpoint = f"inproc://gkernel-hb-control-{id(self):x}"
        self._control_in = context.socket(zmq.PAIR)
        self._control_in.bind(endpoint)
        self._control_out = context.socket(zmq.PAIR)
        self._control_out.connect(endpoint)
        self._calls = deque()
        self._running = False
        self._stopping = False
        self._stopped = _allocate_lock()
        self._stopped.acquire()

    def start(self):
        self._running = True
        _start_new_thread(self._run, ())

    def run_on_socket(self, func, timeout=5.0):
        """``func(socket)`` run by the socket's owner thread; returns its result or raises its error."""
        if not self._running:
            return func(self._socket)
        call = _Call(func)
        self._calls.append(call)
        self._control_out.send(_PAUSE)
        if not call.done.acquire(timeout=timeout):
            raise RuntimeError("the heartbeat thread did not answer")
        if call.error is not None:
            raise call.error
        return call.result

    def _run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            while not self._stopping:
                # frontend == backend: every ping goes straight back to its sender.
                zmq.proxy_steerable(self._socket, self._socket, None, self._control_in)
                while self._calls:
                    self._calls.popleft().run(self._socket)
        except zmq.ZMQError:
            pass  # context terminated under us: nothing left to answer
        finally:
            while self._calls:  # nobody waits forever for a thread that ended
                self._calls.popleft().run(None, _stopped_socket)
            self._socket.close(linger=0)
            self._control_in.close(linger=0)
            self._stopped.release()

    def stop(self, timeout=2.0):
        """Stop answering and wait (boundedly) until the thread closed its socket."""
        if self._running:
            self._stopping = True
            self._control_out.send(_PAUSE)
            self._stopped.acquire(timeout=timeout)
        else:
            self._socket.close(linger=0)
            self._control_in.close(linger=0)
        self._control_out.close(linger=0)
