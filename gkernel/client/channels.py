"""Cooperative versions of jupyter_client's channels (``jupyter_client.channels``).

jupyter_client's blocking channels poll their socket from whichever thread
asks, and its heartbeat channel is an OS thread. Here every socket is
``zmq.green`` and has one owner greenlet, because zmq.green allows a single
waiter per direction: :class:`GreenSocketChannel` reads, checks and queues
messages so that any number of greenlets may wait for them, each with its own
timeout; :class:`GreenHBChannel` pings from a greenlet.

Channels are made by :class:`~gkernel.client.GreenKernelClient` with the
constructor signatures jupyter_client uses, and touched only from the hub's
thread.
"""

import logging
from collections import deque
from contextlib import contextmanager
from time import monotonic

import gevent
import zmq
from gevent.event import Event

from .errors import KernelTimeoutError

__all__ = ["GreenHBChannel", "GreenSocketChannel"]


class GreenSocketChannel:
    """shell, iopub, stdin or control: a reader greenlet in front of a bounded queue.

    The reader starts with the channel (jupyter_client's ``start()`` is a no-op
    too) and drops, with a warning on the client's log, messages that fail the
    HMAC check or do not parse. When nobody reads, the queue holds
    ``queue_size`` messages; the reader then waits and zmq buffers up to its
    high-water mark, as it does for jupyter_client's channels.
    """

    queue_size = 1000

    def __init__(self, socket, session, loop=None):
        self.socket = socket
        self.session = session
        self._extra_header = {}
        # The session's parent is the client, whose log leads to the application's.
        self.log = getattr(session.parent, "log", None) or logging.getLogger(__name__)
        self._messages = deque()
        #: Set while a message is queued: what :func:`gevent.wait` watches.
        self.readable = Event()
        self._room = Event()
        self._room.set()
        self._reader = gevent.spawn(self._read)

    def _read(self):
        while True:
            try:
                frames = self.socket.recv_multipart()
            except zmq.ZMQError:
                return  # closed under us: stop() is on its way
            try:
                _, parts = self.session.feed_identities(frames)
                msg = self.session.deserialize(parts)
            except Exception as exc:  # a bad signature, a replay, broken JSON
                self.log.warning("dropped a message that failed to deserialise: %s", exc)
                continue
            self._room.wait()
            self._messages.append(msg)
            self.readable.set()
            if len(self._messages) >= self.queue_size:
                self._room.clear()

    def get_msg(self, timeout=None):
        """The next message; :class:`KernelTimeoutError` if none comes within ``timeout`` seconds."""
        deadline = None if timeout is None else monotonic() + timeout
        # A loop, because another waiter woken by the same message may take it first.
        while not self._messages:
            remaining = None if deadline is None else max(0.0, deadline - monotonic())
            if not self.readable.wait(remaining) and not self._messages:
                raise KernelTimeoutError(f"no message within {timeout} s")
        msg = self._messages.popleft()
        if not self._messages:
            self.readable.clear()
        self._room.set()
        return msg

    def get_msgs(self):
        """Every message queued now, without waiting."""
        msgs = list(self._messages)
        self._messages.clear()
        self.readable.clear()
        self._room.set()
        return msgs

    def msg_ready(self):
        return bool(self._messages)

    def send(self, msg):
        if self._extra_header:
            msg["header"].update(self._extra_header)
        self.session.send(self.socket, msg)

    @contextmanager
    def extra_header(self, **fields):
        """Add *fields* to the header of each message sent meanwhile (JEP 91's ``subshell_id``, say)."""
        self._extra_header = fields
        try:
            yield
        finally:
            self._extra_header = {}

    def start(self):
        """Nothing to do: the reader runs from the start, as jupyter_client's channels poll from the start."""

    def is_alive(self):
        return self.socket is not None

    def stop(self):
        self.close()

    def close(self):
        if self.socket is None:
            return
        self._reader.kill()
        self.socket.close()
        self.socket = None


class GreenHBChannel:
    """The heartbeat: a greenlet pings every ``time_to_dead`` seconds.

    A ping without an echo within ``time_to_dead`` marks the kernel as not
    beating and calls :meth:`call_handlers`; the REQ socket is then replaced,
    since its request/reply cycle is broken. Like jupyter_client's HBChannel, it
    counts as beating until a first ping goes unanswered.
    """

    time_to_dead = 1.0

    def __init__(self, context=None, session=None, address=None, curve_serverkey=None):
        if isinstance(address, tuple):
            address = "tcp://%s:%i" % address
        self.context = context
        self.session = session
        self._extra_header = {}
        self.address = address
        self.curve_serverkey = curve_serverkey
        self.socket = None
        self._pinger = None
        self._paused = False
        self._beating = True

    def start(self):
        if self._pinger is None:
            self._pinger = gevent.spawn(self._ping)

    def _connect(self):
        if self.socket is not None:
            self.socket.close(linger=0)
        self.socket = self.context.socket(zmq.REQ)
        self.socket.linger = 0
        if self.curve_serverkey is not None:
            self.socket.curve_publickey, self.socket.curve_secretkey = zmq.curve_keypair()
            self.socket.curve_serverkey = self.curve_serverkey
        self.socket.connect(self.address)

    def _ping(self):
        self._connect()
        while True:
            if self._paused:
                gevent.sleep(self.time_to_dead)
                continue
            sent = monotonic()
            self.socket.send(b"ping")
            echo = None
            with gevent.Timeout(self.time_to_dead, False):
                echo = self.socket.recv()
            waited = monotonic() - sent
            self._beating = echo is not None
            if self._beating:
                gevent.sleep(self.time_to_dead - waited)
            else:
                self.call_handlers(waited)
                self._connect()

    def is_alive(self):
        return self._pinger is not None and not self._pinger.dead

    def is_beating(self):
        return self.is_alive() and not self._paused and self._beating

    def pause(self):
        self._paused = True

    def unpause(self):
        self._paused = False

    def call_handlers(self, since_last_heartbeat):
        """Called in the pinger greenlet when a ping went unanswered; override to react."""

    def stop(self):
        if self._pinger is not None:
            self._pinger.kill()
        self.close()

    def close(self):
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None
