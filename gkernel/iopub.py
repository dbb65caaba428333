"""The IOPub publisher: one greenlet owns the IOPub socket and sends everything.

Any greenlet of the kernel calls :meth:`IOPubPublisher.publish`, which builds
and signs the message and queues it without blocking; the publisher greenlet
is the socket's only sender (``zmq.green`` allows one waiting greenlet per
direction). One FIFO queue for all IOPub traffic is what keeps a cell's
output ahead of its idle status.

The socket is an XPUB: a second greenlet is its only receiver and turns each
subscription into an ``iopub_welcome`` message (protocol 5.4) on the
subscribed topic, so a client knows its subscription is live instead of
polling with kernel_info requests until IOPub output arrives.

Greenlet affinity: ``publish`` and ``flush`` may be called from any greenlet
of the hub's thread.
"""

import gevent
from gevent.event import Event
from gevent.queue import Queue

__all__ = ["IOPubPublisher"]

_STOP = object()


class IOPubPublisher:
    def __init__(self, session, socket, log):
        self.session = session
        self.socket = socket
        self.log = log
        self._queue = Queue()
        self._idle = Event()
        self._idle.set()
        self._greenlets = []

    def start(self):
        self._greenlets = [gevent.spawn(self._run), gevent.spawn(self._welcome_subscribers)]

    def message(self, msg_type, content, parent=None, metadata=None):
        """A new message dict (not yet sent)."""
        return self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)

    def send(self, msg, topic=None):
        """Queue a message dict for IOPub; returns at once."""
        self._idle.clear()
        self._queue.put(self.session.serialize(msg, ident=(topic or msg["msg_type"]).encode()))

    def publish(self, msg_type, content, parent=None, topic=None, metadata=None):
        """Queue one new message for IOPub; returns at once with the message dict."""
        msg = self.message(msg_type, content, parent, metadata)
        self.send(msg, topic)
        return msg

    def _welcome_subscribers(self):
        """Owner of the socket's receiving side: XPUB subscription events."""
        while True:
            event = self.socket.recv()
            if event[:1] != b"\x01":
                continue  # an unsubscription
            try:
                topic = event[1:].decode()
            except UnicodeDecodeError:
                self.log.warning("IOPub: ignored a subscription to a non-UTF-8 topic")
                continue
            # Published on the subscribed topic itself, so it reaches the new subscriber.
            self.publish("iopub_welcome", {"subscription": topic}, topic=topic)

    def _run(self):
        while True:
            frames = self._queue.get()
            if frames is _STOP:
                break
            try:
                self.socket.send_multipart(frames, copy=False)
            except Exception:  # a send failure must not kill the publisher
                self.log.exception("IOPub send failed")
            if not self._queue.qsize():
                self._idle.set()
        self._idle.set()

    def flush(self, timeout=None):
        """Wait until everything queued so far has been handed to zmq."""
        return self._idle.wait(timeout)

    def stop(self, timeout=2.0):
        """Send what is queued, then end the greenlets."""
        if self._greenlets:
            sender, welcomer = self._greenlets
            welcomer.kill()
            self._queue.put(_STOP)
            sender.join(timeout)
