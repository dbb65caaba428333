"""Forked children: their output reaches the parent's IOPub through a pipe.

A child made by ``os.fork()`` (or multiprocessing's fork start method)
inherits the kernel's greenlets, watchers and zmq sockets, but zmq sockets
must never be used across a fork, and a child writing to them could corrupt
the parent's. So, with :class:`ForkRelay` installed:

* before each fork, the parent makes a pipe;
* in the child, every kernel of the process is put in *forked* mode
  (:meth:`gkernel.kernel.Kernel.enter_forked_child`): its socket watchers and
  serving greenlets are stopped, inherited unsent output is dropped (the
  parent sends it), and its publisher becomes a :class:`PipePublisher` that
  writes each message, already tagged with its cell's parent header, to the
  pipe, unbuffered (a child may ``os._exit`` at any moment);
* in the parent, a greenlet reads the pipe and sends each message on the
  kernel's real publisher, until every process holding the pipe has exited
  or exec'd (the pipe is close-on-exec).

A process has one set of fork hooks, so the host installs one relay for all
its kernels.
"""

import json
import os
import struct

import gevent
from gevent.os import make_nonblocking, nb_read

__all__ = ["ForkRelay", "PipePublisher"]

_LENGTH = struct.Struct("!I")


class PipePublisher:
    """The publisher of a kernel in a forked child: messages go to the relay pipe."""

    def __init__(self, kernel_id, session, fd):
        self.kernel_id = kernel_id
        self.session = session
        self.fd = fd

    def message(self, msg_type, content, parent=None, metadata=None):
        return self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)

    def send(self, msg, topic=None):
        record = self.session.pack({"kernel": self.kernel_id, "topic": topic, "msg": msg})
        data = _LENGTH.pack(len(record)) + record
        while data:  # a blocking write: the reader is another process
            data = data[os.write(self.fd, data):]

    def publish(self, msg_type, content, parent=None, topic=None, metadata=None):
        msg = self.message(msg_type, content, parent, metadata)
        self.send(msg, topic)
        return msg

    def send_frames(self, frames):
        """A message user code serialized itself (``kernel.iopub_socket``): relayed as a dict."""
        idents, msg_list = self.session.feed_identities(frames)
        self.send(self.session.deserialize(msg_list), idents[0].decode() if idents else None)

    def flush(self, timeout=None):
        return True


class ForkRelay:
    """Fork hooks for the kernels ``kernels()`` returns (a callable: the host's live kernels)."""

    def __init__(self, kernels, log):
        self.kernels = kernels
        self.log = log
        self._pipe = None

    def install(self):
        os.register_at_fork(before=self._before, after_in_parent=self._in_parent,
                            after_in_child=self._in_child)

    def _before(self):
        self._pipe = os.pipe()  # close-on-exec: an exec'd child never holds it

    def _in_parent(self):
        read_fd, write_fd = self._pipe
        self._pipe = None
        os.close(write_fd)
        gevent.spawn(self._relay, read_fd)

    def _in_child(self):
        read_fd, write_fd = self._pipe
        self._pipe = None
        os.close(read_fd)
        for kernel in self.kernels():
            kernel.enter_forked_child(PipePublisher(kernel.id, kernel.session, write_fd))

    def _relay(self, fd):
        """Parent side of one fork's pipe: messages out, until EOF."""
        make_nonblocking(fd)
        buffer = bytearray()
        try:
            while True:
                data = nb_read(fd, 1 << 16)
                if not data:
                    break
                buffer += data
                while len(buffer) >= _LENGTH.size:
                    (length,) = _LENGTH.unpack_from(buffer)
                    end = _LENGTH.size + length
                    if len(buffer) < end:
                        break
                    self._deliver(bytes(buffer[_LENGTH.size:end]))
                    del buffer[:end]
        finally:
            os.close(fd)

    def _deliver(self, record):
        try:
            entry = json.loads(record)
            kernel_id, topic, msg = entry["kernel"], entry["topic"], entry["msg"]
        except (ValueError, KeyError, TypeError):
            self.log.warning("forked child: dropped an unreadable output record")
            return
        for kernel in self.kernels():
            if kernel.id == kernel_id:
                kernel.publisher.send(msg, topic)
                return  # else the kernel shut down meanwhile
