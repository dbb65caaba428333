"""Cooperative ``input()``: cells ask the client through the stdin channel.

``input()``, ``getpass.getpass()`` and ``sys.stdin.readline()``/``read()`` in a
cell send an ``input_request`` to the client that sent the cell's
execute_request and wait for its ``input_reply`` -- cooperatively, so other
greenlets, servers and the control channel keep running meanwhile. A
greenlet the cell spawned may ask too, while the cell runs.

* :class:`StdinChannel` -- one per kernel: the stdin socket's only reader
  greenlet hands each reply to the request that waits for it: by parent
  msg_id, or, for a reply without a parent header (jupyter_client's
  ``KernelClient.input`` sends none), to the oldest request waiting on the
  same client. A reply nobody waits for (stale, or answering an interrupted
  request) is dropped and logged. A reply of ``"\\x04"`` (Ctrl-D) raises
  EOFError.
* :func:`install_patches` / :func:`remove_patches` -- the process-wide patches of
  ``builtins.input``, ``getpass.getpass`` and ``sys.stdin``, installed while at
  least one kernel uses them. The patched functions find the calling cell's
  kernel (:func:`gkernel.cells.current_cell`); outside any cell they are the
  originals. They do not depend on gevent's monkey-patching.

A cell whose request had ``allow_stdin: false`` (or that already finished)
gets :class:`StdinNotImplementedError` at once, never a hang.
"""

import builtins
import getpass
import io
import sys

from gevent.event import AsyncResult

from .cells import current_cell

__all__ = ["StdinChannel", "StdinNotImplementedError", "install_patches", "remove_patches"]

EOT = "\x04"


class StdinNotImplementedError(NotImplementedError):
    """input() was called where no client can answer it."""


class StdinChannel:
    """``input_request``/``input_reply`` over one kernel's stdin ROUTER socket (hub thread only)."""

    def __init__(self, session, socket, log):
        self.session = session
        self.socket = socket
        self.log = log
        self._waiting = {}
        self._reader = None

    def start(self):
        import gevent
        self._reader = gevent.spawn(self._read)

    def stop(self):
        if self._reader is not None:
            self._reader.kill()
        for _, waiter in self._waiting.values():
            waiter.set_exception(EOFError("the kernel is shutting down"))

    def request(self, cell, prompt, password=False):
        """Ask the client of *cell* for a line; returns it without a newline."""
        if not cell.allow_stdin:
            raise StdinNotImplementedError(
                "input() was called, but this cell's client does not accept input requests "
                "(allow_stdin is false, or the cell has finished)")
        cell.kernel.flush_output()  # the prompt comes after what was printed before it
        msg = self.session.msg("input_request", {"prompt": prompt, "password": password}, parent=cell.parent)
        waiter = AsyncResult()
        self._waiting[msg["header"]["msg_id"]] = (tuple(cell.idents), waiter)
        try:
            self.session.send(self.socket, msg, ident=cell.idents)
            value = waiter.get()
        finally:
            self._waiting.pop(msg["header"]["msg_id"], None)
        if value == EOT:
            raise EOFError("end of input (the client sent Ctrl-D)")
        return value

    def _read(self):
        """Owner of the socket's receiving side: route each reply to its waiter."""
        while True:
            frames = self.socket.recv_multipart()
            try:
                idents, msg_list = self.session.feed_identities(frames)
                msg = self.session.deserialize(msg_list)
                msg_type = msg["header"]["msg_type"]
                parent_id = msg["parent_header"].get("msg_id")
                value = msg["content"]["value"] if msg_type == "input_reply" else None
            except Exception as exc:
                self.log.warning("stdin: dropped an unauthenticated or malformed message: %s", exc)
                continue
            waiter = self._waiter_for(parent_id, tuple(idents))
            if msg_type != "input_reply" or not isinstance(value, str):
                self.log.warning("stdin: dropped a %s with no string value", msg_type)
            elif waiter is None:
                self.log.warning("stdin: dropped an input_reply nobody waits for (stale or interrupted)")
            else:
                waiter.set(value)

    def _waiter_for(self, parent_id, idents):
        if parent_id:
            entry = self._waiting.get(parent_id)
            return entry[1] if entry else None
        for waiting_idents, waiter in self._waiting.values():  # oldest first
            if waiting_idents == idents and not waiter.ready():
                return waiter
        return None


# -- the process-wide patches ---------------------------------------------------

def _ask(prompt="", password=False):
    """Ask through the calling cell's kernel, or None when not in a cell."""
    cell = current_cell()
    if cell is None:
        return None
    return cell.kernel.stdin.request(cell, str(prompt), password)


def _input(prompt=""):
    value = _ask(prompt)
    return _originals["input"](prompt) if value is None else value


def _getpass(prompt="Password: ", stream=None):
    value = _ask(prompt, password=True)
    return _originals["getpass"](prompt, stream) if value is None else value


class StdinRouter(io.TextIOBase):
    """``sys.stdin`` in cells: each readline() is one input request.

    ``read()`` asks once too, and returns the reply with its newline; a
    ``"\\x04"`` reply reads as end of file (``""``), so ``for line in
    sys.stdin`` asks until the user sends Ctrl-D.
    """

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, original):
        super().__init__()
        self.original = original

    def readable(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation("fileno: sys.stdin in a gkernel cell reads through input requests")

    def readline(self, size=-1):
        if current_cell() is None:
            return self.original.readline(size)
        try:
            line = _ask() + "\n"
        except EOFError:
            return ""
        return line if size is None or size < 0 else line[:size]

    def read(self, size=-1):
        return self.readline(size)


_originals = {}
_users = set()


def install_patches(kernel):
    """Patch input, getpass and sys.stdin while *kernel* runs (idempotent per kernel)."""
    if not _users:
        _originals.update(input=builtins.input, getpass=getpass.getpass, stdin=sys.stdin)
        builtins.input, getpass.getpass = _input, _getpass
        sys.stdin = StdinRouter(sys.stdin)
    _users.add(kernel)


def remove_patches(kernel):
    """Undo :func:`install_patches` for *kernel*; the last kernel restores the originals."""
    _users.discard(kernel)
    if not _users and _originals:
        builtins.input, getpass.getpass, sys.stdin = (_originals.pop(name) for name in ("input", "getpass", "stdin"))
