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

A child that never exits would keep the kernel's listening sockets (it
inherited their file descriptors), so a restart on the same ports would fail
with "Address already in use", and it would outlive the host. The child's
first record on the pipe names it (pid, start time, the forking cell's
kernel); :meth:`ForkRelay.end_children` ends a kernel's children when a
host closes the kernel, and all of them when the process stops (SIGTERM, then SIGKILL
after a second), as ipykernel ends its children. A child that exec'd another
program closed the pipe and the kernel's sockets (both are close-on-exec):
it is left alone.

A process has one set of fork hooks, so the host installs one relay for all
its kernels.
"""

import json
import os
import signal
import struct
import time

import gevent
from gevent.os import make_nonblocking, nb_read

__all__ = ["ForkRelay", "PipePublisher"]

_LENGTH = struct.Struct("!I")


def _write_record(fd, record):
    data = _LENGTH.pack(len(record)) + record
    while data:  # a blocking write: the reader is another process
        data = data[os.write(fd, data):]


class PipePublisher:
    """The publisher of a kernel in a forked child: messages go to the relay pipe."""

    def __init__(self, kernel_id, session, fd):
        self.kernel_id = kernel_id
        self.session = session
        self.fd = fd

    def message(self, msg_type, content, parent=None, metadata=None):
        return self.session.msg(msg_type, content, parent=parent or {}, metadata=metadata)

    def send(self, msg, topic=None):
        _write_record(self.fd, self.session.pack({"kernel": self.kernel_id, "topic": topic, "msg": msg}))

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
        #: pid -> (start ticks, id of the forking cell's kernel or None) of children that hold their pipe
        self._children = {}
        #: the greenlets reading the pipes of live children
        self._relays = set()

    def install(self):
        os.register_at_fork(before=self._before, after_in_parent=self._in_parent,
                            after_in_child=self._in_child)

    def _before(self):
        self._pipe = os.pipe()  # close-on-exec: an exec'd child never holds it

    def _in_parent(self):
        read_fd, write_fd = self._pipe
        self._pipe = None
        os.close(write_fd)
        relay = gevent.spawn(self._relay, read_fd)
        self._relays.add(relay)
        relay.rawlink(self._relays.discard)

    def _in_child(self):
        from ._trust import start_ticks
        from .cells import current_cell

        read_fd, write_fd = self._pipe
        self._pipe = None
        os.close(read_fd)
        # The process's SIGTERM handler ends its kernels: here it would shut the parent's kernels
        # down from the child, and end_children's SIGTERM would not end the child.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # The parent's relays are the parent's: here they would read (steal) its children's records.
        for relay in self._relays:
            relay.kill(block=False)
        self._relays.clear()
        self._children.clear()
        cell = current_cell()
        _write_record(write_fd, json.dumps({"child": os.getpid(), "started": start_ticks(),
                                            "kernel": cell.kernel.id if cell is not None else None}).encode())
        for kernel in self.kernels():
            kernel.enter_forked_child(PipePublisher(kernel.id, kernel.session, write_fd))

    def _relay(self, fd):
        """Parent side of one fork's pipe: messages out, until EOF (the child exited or exec'd)."""
        make_nonblocking(fd)
        buffer = bytearray()
        child = None
        try:
            while True:
                data = nb_read(fd, 1 << 16)
                if not data:
                    # Exited, or exec'd (and closed our sockets). (A relay killed with its kernel's
                    # cells leaves its child registered, for end_children.)
                    self._children.pop(child, None)
                    break
                buffer += data
                while len(buffer) >= _LENGTH.size:
                    (length,) = _LENGTH.unpack_from(buffer)
                    end = _LENGTH.size + length
                    if len(buffer) < end:
                        break
                    child = self._deliver(bytes(buffer[_LENGTH.size:end])) or child
                    del buffer[:end]
        finally:
            os.close(fd)

    def end_children(self, kernel_ids=None, grace=1.0):
        """End the live forked children of the kernels *kernel_ids* (None: every child): SIGTERM,
        then SIGKILL for those still alive after *grace* seconds."""
        from ._trust import process_matches

        children = [(pid, started) for pid, (started, owner) in list(self._children.items())
                    if kernel_ids is None or owner in kernel_ids]
        for pid, _ in children:
            del self._children[pid]  # ended here, or gone already (their relays may be killed)
        for signum in (signal.SIGTERM, signal.SIGKILL):
            alive = [(pid, started) for pid, started in children if process_matches(pid, started)]
            for pid, _ in alive:
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
            if alive:
                self.log.warning("ended %d forked child process(es) with %s", len(alive), signum.name)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                gevent.sleep(0.02)
                alive = [(pid, started) for pid, started in alive if process_matches(pid, started)]
            children = alive

    def _deliver(self, record):
        """Publish one record; returns the child's pid if the record names the child."""
        try:
            entry = json.loads(record)
            if "child" in entry:
                self._children[entry["child"]] = (entry.get("started"), entry.get("kernel"))
                return entry["child"]
            kernel_id, topic, msg = entry["kernel"], entry["topic"], entry["msg"]
        except (ValueError, KeyError, TypeError):
            self.log.warning("forked child: dropped an unreadable output record")
            return
        for kernel in self.kernels():
            if kernel.id == kernel_id:
                kernel.publisher.send(msg, topic)
                return  # else the kernel shut down meanwhile
