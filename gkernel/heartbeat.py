"""The heartbeat: a real OS thread echoing pings with native zmq.

This is the one place gkernel uses a thread. Greenlets cannot run while a
cell spins the CPU, but a heartbeat must keep answering then, or clients
declare the kernel dead. A native ``zmq.proxy_steerable`` runs in C with the
GIL released, so it echoes pings no matter what the main thread is doing.

The thread is started with the *original* ``_thread.start_new_thread``:
after ``monkey.patch_all()`` ``threading.Thread`` would make a greenlet.
The socket comes from the kernel's own (native) libzmq context, so the
heartbeat adds no zmq I/O thread of its own.

Thread affinity: the echo socket belongs to the heartbeat thread once
:meth:`start` returns; only :meth:`stop` (any thread) touches the control
socket's other end, and only once.
"""

import zmq
from gevent.monkey import get_original

__all__ = ["Heartbeat"]

_start_new_thread = get_original("_thread", "start_new_thread")
_allocate_lock = get_original("_thread", "allocate_lock")


class Heartbeat:
    """Echoes every message received on a bound ROUTER socket back to its sender."""

    def __init__(self, context, socket):
        # ``context`` is a native zmq.Context; ``socket`` the native socket
        # bound to the hb address (see transport.Transport).
        self._socket = socket
        endpoint = f"inproc://gkernel-hb-control-{id(self):x}"
        self._control_in = context.socket(zmq.PAIR)
        self._control_in.bind(endpoint)
        self._control_out = context.socket(zmq.PAIR)
        self._control_out.connect(endpoint)
        self._stopped = _allocate_lock()
        self._stopped.acquire()

    def start(self):
        _start_new_thread(self._run, ())

    def _run(self):
        try:
            # frontend == backend: every ping goes straight back to its sender.
            zmq.proxy_steerable(self._socket, self._socket, None, self._control_in)
        except zmq.ZMQError:
            pass  # context terminated under us: nothing left to answer
        finally:
            self._socket.close(linger=0)
            self._control_in.close(linger=0)
            self._stopped.release()

    def stop(self, timeout=2.0):
        """Ask the proxy to stop and wait (boundedly) until the thread closed its socket."""
        self._control_out.send(b"TERMINATE")
        self._stopped.acquire(timeout=timeout)
        self._control_out.close(linger=0)
