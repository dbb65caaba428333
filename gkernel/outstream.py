"""Cooperative stdout/stderr: text written by a cell becomes stream messages.

Two pieces:

* :class:`KernelOutput` -- one per kernel. It buffers the text of both stream
  names and publishes one ``stream`` message per flush; the buffer holds the
  text of one (stream name, cell) at a time, so switching from stdout to
  stderr or from one cell to another flushes first and messages keep the
  order of the writes. A flush happens soon after the first write after a
  quiet spell (the first output of a cell shows at once), then at most every
  ``flush_interval`` seconds, when the buffer passes ``max_buffer``
  characters, and when the kernel flushes at the end of a request. Hooks
  registered per stream name see each message before it is sent and may
  change it or swallow it (return None), as output widgets do with the
  reference kernel's streams.
* :class:`StreamRouter` -- what ``sys.stdout`` and ``sys.stderr`` become. They are
  process-wide, so the router finds the writing code's cell
  (:func:`gkernel.cells.current_cell`) and hands the text to that cell's
  kernel. Text from outside any cell goes to the most recent cell of the
  router's fallback kernel, and to the original stream when there is none.
  Before buffering, the router collects what was written to its file
  descriptor (:mod:`gkernel.fdcapture`), so Python-level and fd-level output
  keep their order.

Thread affinity: :class:`KernelOutput` belongs to the hub's thread; a write
from another OS thread is handed over with the loop's thread-safe callback,
in order with that thread's other output.
"""

import io

from gevent import get_hub, getcurrent

from ._threads import hub_thread_check, os_thread_ident
from .cells import CELL_KEY, CELL_VAR, current_cell

__all__ = ["KernelOutput", "StreamRouter", "STREAM_NAMES"]


STREAM_NAMES = ("stdout", "stderr")


class KernelOutput:
    """Buffered ``stream`` messages of one kernel."""

    def __init__(self, publisher, flush_interval=0.05, max_buffer=64 * 1024):
        self.publisher = publisher
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._hooks = {name: [] for name in STREAM_NAMES}
        self._parts = []
        self._size = 0
        self._name = None
        self._parent = None
        self._timer = None
        self._loop = get_hub().loop
        self._last_flush = 0.0
        self._line_buffered = False
        self._in_hub_thread = hub_thread_check()
        self._thread = os_thread_ident()

    def register_hook(self, name, hook):
        """Call ``hook(msg)`` on each outgoing *name* message; it returns the message to send, or None."""
        self._hooks[name].append(hook)

    def unregister_hook(self, name, hook):
        """Remove *hook*; True if it was registered."""
        try:
            self._hooks[name].remove(hook)
        except ValueError:
            return False
        return True

    def write(self, name, text, parent):
        """Buffer *text* for stream *name* of the cell whose request is *parent*."""
        # Hot path (every print calls this twice): more text for the same
        # stream and cell, in the hub's thread, while a flush is pending.
        if (self._parts and parent is self._parent and name == self._name
                and os_thread_ident() == self._thread and not self._line_buffered):
            self._parts.append(text)
            self._size += len(text)
            if self._size >= self.max_buffer:
                self.flush()
            return
        if not self._in_hub_thread():
            self._loop.run_callback_threadsafe(self.write, name, text, parent)
            return
        if self._parts and (name != self._name or parent is not self._parent):
            self.flush()  # one stream and one cell per message, in write order
        self._name, self._parent = name, parent
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.max_buffer or (self._line_buffered and text.endswith("\n")):
            self.flush()
        elif self._timer is None:
            # Leading edge: after a quiet spell the flush runs as soon as the
            # writer yields; during a burst, once per flush_interval.
            delay = max(0.0, self._last_flush + self.flush_interval - self._loop.now())
            self._timer = self._loop.timer(delay)
            self._timer.start(self.flush)

    def flush(self):
        """Publish what is buffered (hub thread; from another thread it is scheduled)."""
        if not self._in_hub_thread():
            self._loop.run_callback_threadsafe(self.flush)
            return
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if not self._parts:
            return
        self._last_flush = self._loop.now()
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        name = self._name
        msg = self.publisher.message("stream", {"name": name, "text": text}, parent=self._parent)
        for hook in list(self._hooks[name]):
            msg = hook(msg)
            if msg is None:
                return
        self.publisher.send(msg, topic=f"stream.{name}")

    def rebind(self, publisher):
        """In a forked child: drop the inherited buffer (the parent sends it) and
        publish through *publisher*, line-buffered (a child may exit any time)."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        self._parts.clear()
        self._size = 0
        self.publisher = publisher
        self._line_buffered = True


class StreamRouter(io.TextIOBase):
    """A text file that sends each write to the writing cell's kernel.

    ``isatty`` is what :meth:`isatty` answers (libraries use it to decide on
    colours and progress bars); with ``echo`` every write is also copied to
    the original stream -- a blocking write, so only for debugging a kernel.
    ``capture`` is the :class:`~gkernel.fdcapture.FdCapture` of this stream's
    file descriptor, if fd-level output is captured; :meth:`fileno` then
    answers that descriptor.
    """

    def __init__(self, name, original, fallback=None, isatty=False, echo=False, capture=None):
        super().__init__()
        self.name = name
        #: the stream this router replaced; restored by the host at shutdown
        self.original = original
        #: callable returning the kernel that gets output from outside any cell
        self.fallback = fallback
        self.capture = capture
        self._isatty = isatty
        self._echo = echo
        self._closed = False

    encoding = "utf-8"
    errors = "replace"

    def writable(self):
        return True

    def isatty(self):
        return self._isatty

    def register_hook(self, hook):
        """Register *hook* on the calling cell's kernel (see KernelOutput.register_hook)."""
        self._kernel().output.register_hook(self.name, hook)

    def unregister_hook(self, hook):
        return self._kernel().output.unregister_hook(self.name, hook)

    def _kernel(self):
        kernel, _ = self._target()
        if kernel is None:
            raise RuntimeError(f"sys.{self.name}: not called from a gkernel cell")
        return kernel

    def fileno(self):
        if self.capture is None:
            # Output through the fd would bypass the cell.
            raise io.UnsupportedOperation("fileno: fd-level capture is off, so this stream has no descriptor")
        return self.capture.fd

    def _target(self):
        # current_cell(), inlined for the common case: every print calls this twice.
        cell = CELL_VAR.get()
        if cell is None:
            tree = getattr(getcurrent(), "spawn_tree_locals", None)
            cell = tree.get(CELL_KEY) if tree is not None else current_cell()
        if cell is not None:
            return cell.kernel, cell.parent
        kernel = self.fallback() if self.fallback else None
        if kernel is not None and kernel.last_parent is not None:
            return kernel, kernel.last_parent
        return None, None

    def close(self):
        self._closed = True

    @property
    def closed(self):
        return self._closed

    def write(self, text):
        # The hot path of every print (twice per print): no call that can be saved.
        if text.__class__ is not str and not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self._closed:
            raise ValueError("I/O operation on closed file.")
        if not text:
            return 0  # nothing to publish: no empty stream message
        if self._echo:
            self.original.write(text)
        cell = CELL_VAR.get()
        if cell is not None:
            kernel, parent = cell.kernel, cell.parent
        else:
            kernel, parent = self._target()
            if kernel is None:
                return self.original.write(text)
        capture = self.capture
        # capture.poll_if_written(), inlined: fd-level output written before this text goes first.
        if capture is not None and capture.unread:
            capture.poll((kernel, parent))
        kernel.output.write(self.name, text, parent)
        return len(text)

    def flush(self):
        kernel, _ = self._target()
        if kernel is None:
            self.original.flush()
        else:
            kernel.flush_output()
