"""The IOPub publisher: one greenlet owns the IOPub socket and sends everything.

Any greenlet of the kernel calls :meth:`IOPubPublisher.publish`, which builds
and signs the message and queues it without blocking; the publisher greenlet
is the socket's only sender (``zmq.green`` allows one waiting greenlet per
direction). One FIFO queue for all IOPub traffic is what keeps a cell's
output ahead of its idle status.

The socket is an XPUB: a second greenlet is its only receiver and turns each
subscription into an ``iopub_welcome`` message (protocol 5.4) on the
subscribed topic, so a client knows its subscription is live instead of
polling with kernel_info requests until IOPub output arrives; and the first
request of a new kernel waits (boundedly) for a first subscriber.

Memory stays bounded whatever the subscribers do:

* zmq's side: an XPUB never blocks a sender. Each subscriber has a pipe of at
  most ``SNDHWM`` messages (set by the transport); when a subscriber stops
  reading, messages for it beyond that are dropped, for it alone, while the
  others get everything.
* our side: the queue in front of the socket holds at most ``max_queued``
  bytes. A greenlet that publishes past that waits (cooperatively) until the
  publisher greenlet has handed half of it to zmq, which never takes long
  since zmq does not block. Without this, a cell printing in a loop that
  never yields would queue its whole output in memory.

Thread affinity: ``publish``/``send`` may be called from any greenlet of the
hub's thread, and from other OS threads, whose messages are handed over
with the loop's thread-safe callback (never by touching the socket); such a
thread never waits for the queue. ``flush`` and ``stop`` are for the hub's
thread.
"""

from collections import deque

import gevent
from gevent import get_hub, getcurrent
from gevent.event import Event
from gevent.lock import Semaphore

from ._threads import hub_thread_check

__all__ = ["IOPubPublisher", "QueueSocket"]

_STOP = object()


class IOPubPublisher:
    def __init__(self, session, socket, log, max_queued=16 * 1024 * 1024):
        self.session = session
        self.socket = socket
        self.log = log
        self.max_queued = max_queued
        self._queue = deque()
        self._queued_bytes = 0
        self._wakeup = Event()
        self._idle = Event()
        self._idle.set()
        #: set while the queue is below max_queued
        self._room = Event()
        self._room.set()
        #: held while a message's frames are being sent
        self._sending = Semaphore()
        self._hub = get_hub()
        self._in_hub_thread = hub_thread_check()
        #: the sender and the welcomer, once started
        self.greenlets = []
        #: live subscriptions: about one per connected client
        self.subscriptions = 0
        #: set by the first subscription, or once a wait for one timed out
        self._first_subscriber = Event()

    def start(self):
        self.greenlets = [gevent.spawn(self._run), gevent.spawn(self._welcome_subscribers)]

    def message(self, msg_type, content, parent=None, metadata=None):
        """A new message dict (not yet sent)."""
        return self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)

    def send(self, msg, topic=None, buffers=None):
        """Queue a message dict, and its binary *buffers*, for IOPub (waits only while the queue is full)."""
        if isinstance(topic, str):
            topic = topic.encode()
        frames = self.session.serialize(msg, ident=topic or msg["msg_type"].encode())
        if buffers:
            frames += [bytes(buffer) for buffer in buffers]  # not signed, as in Session.send
        self.send_frames(frames)

    def send_frames(self, frames):
        """Queue a message already serialized and signed (see :class:`QueueSocket`)."""
        if self._in_hub_thread():
            self._enqueue(frames)
        else:
            self._hub.loop.run_callback_threadsafe(self._enqueue, frames)

    def _enqueue(self, frames):
        self._queue.append(frames)
        self._queued_bytes += sum(map(len, frames))
        self._idle.clear()
        self._wakeup.set()
        if self._queued_bytes > self.max_queued:
            self._room.clear()
            current = getcurrent()
            if current is not self._hub and current not in self.greenlets:
                self._room.wait()  # backpressure; the hub and our own greenlets never wait

    def publish(self, msg_type, content, parent=None, topic=None, metadata=None, buffers=None):
        """Queue one new message for IOPub; returns at once with the message dict."""
        msg = self.message(msg_type, content, parent, metadata)
        self.send(msg, topic, buffers)
        return msg

    def _welcome_subscribers(self):
        """Owner of the socket's receiving side: XPUB subscription events."""
        while True:
            event = self.socket.recv()
            if event[:1] != b"\x01":
                # An unsubscription, also sent by zmq when a subscriber disconnects.
                self.subscriptions = max(0, self.subscriptions - 1)
                continue
            self.subscriptions += 1
            self._first_subscriber.set()
            try:
                topic = event[1:].decode()
            except UnicodeDecodeError:
                self.log.warning("IOPub: ignored a subscription to a non-UTF-8 topic")
                continue
            # Published on the subscribed topic itself, so it reaches the new subscriber.
            self.publish("iopub_welcome", {"subscription": topic}, topic=topic)

    def wait_for_first_subscriber(self, timeout):
        """Wait until a client has subscribed, at most *timeout* seconds; only the first wait waits."""
        if not self._first_subscriber.wait(timeout):
            self._first_subscriber.set()

    def _run(self):
        queue = self._queue
        while True:
            while not queue:
                self._idle.set()
                self._wakeup.clear()
                self._wakeup.wait()
            if queue[0] is _STOP:
                break
            with self._sending:
                if queue and queue[0] is not _STOP:
                    self._send_next()
        self._idle.set()

    def _send_next(self):
        frames = self._queue.popleft()
        self._queued_bytes -= sum(map(len, frames))
        if self._queued_bytes <= self.max_queued // 2:
            self._room.set()
        try:
            self.socket.send_multipart(frames, copy=False)
        except Exception:  # a send failure must not kill the publisher
            self.log.exception("IOPub send failed")

    def send_queued_now(self):
        """Send what is queued from the calling greenlet (see :mod:`gkernel.cpuwatch`).

        For a greenlet that holds the CPU and will not let the publisher
        greenlet run. A send can yield midway (pyzmq starts a helper for
        large zero-copy frames): ``_sending`` keeps two senders from
        interleaving the frames of their messages, and a send already under
        way means the publisher greenlet is at work anyway.
        """
        if not self._sending.acquire(blocking=False):
            return
        try:
            queue = self._queue
            while queue and queue[0] is not _STOP:
                self._send_next()
        finally:
            self._sending.release()

    def flush(self, timeout=None):
        """Wait until everything queued so far has been handed to zmq."""
        return self._idle.wait(timeout)

    def stop(self, timeout=2.0):
        """Send what is queued, then end the greenlets."""
        if self.greenlets:
            sender, welcomer = self.greenlets
            welcomer.kill()
            self._queue.append(_STOP)
            self._wakeup.set()
            sender.join(timeout)
            self._room.set()  # release anyone still waiting for room


class QueueSocket:
    """``kernel.iopub_socket`` for user code: the publisher's queue, dressed as a socket.

    Code written for ipykernel sends messages of its own with
    ``kernel.session.send(kernel.iopub_socket, ...)``. The IOPub socket has
    one sender, the publisher greenlet; this object takes the frames
    ``Session.send`` makes and queues them behind what the kernel published
    so far, after flushing buffered output, so order is kept.
    """

    def __init__(self, publisher, flush_output):
        self._publisher = publisher
        self._flush_output = flush_output

    def send_multipart(self, frames, flags=0, copy=True, track=False, **kwargs):
        self._flush_output()
        self._publisher.send_frames([bytes(frame) for frame in frames])
