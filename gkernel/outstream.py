"""Cooperative stdout/stderr: text written by a cell becomes stream messages.

Two pieces:

* :class:`KernelStream` -- one per kernel and stream name. It buffers text and
  publishes one ``stream`` message per flush and per parent cell; a flush
  happens after ``flush_interval`` seconds, when the buffer passes
  ``max_buffer`` characters, when the text's cell changes, and when the kernel
  flushes at the end of a request. Hooks registered on it see each message
  before it is sent and may change it or swallow it (return None), as output
  widgets do with the reference kernel's streams.
* :class:`StreamRouter` -- what ``sys.stdout`` and ``sys.stderr`` become. They are
  process-wide, so the router finds the writing greenlet's cell
  (:func:`gkernel.cells.current_cell`) and hands the text to that cell's
  kernel. Text from outside any cell goes to the most recent cell of the
  router's fallback kernel, and to the original stream when there is none.
"""

import io

from gevent import get_hub

from .cells import current_cell

__all__ = ["KernelStream", "StreamRouter"]


class KernelStream:
    """Buffered ``stream`` messages of one kernel for one stream name.

    Hub-thread only: called from any greenlet of the hub's thread.
    """

    def __init__(self, publisher, name, flush_interval=0.05, max_buffer=64 * 1024):
        self.publisher = publisher
        self.name = name
        self.flush_interval = flush_interval
        self.max_buffer = max_buffer
        self._parts = []
        self._size = 0
        self._parent = None
        self._timer = None
        self._hooks = []

    def register_hook(self, hook):
        """Call ``hook(msg)`` on each outgoing message; it returns the message to send, or None."""
        self._hooks.append(hook)

    def unregister_hook(self, hook):
        """Remove *hook*; True if it was registered."""
        try:
            self._hooks.remove(hook)
        except ValueError:
            return False
        return True

    def write(self, text, parent):
        if self._parts and parent is not self._parent:
            self.flush()  # keep each message to one cell, in order
        self._parent = parent
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.max_buffer:
            self.flush()
        elif self._timer is None:
            self._timer = get_hub().loop.timer(self.flush_interval)
            self._timer.start(self.flush)

    def flush(self):
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        msg = self.publisher.message("stream", {"name": self.name, "text": text}, parent=self._parent)
        for hook in list(self._hooks):
            msg = hook(msg)
            if msg is None:
                return
        self.publisher.send(msg, topic=f"stream.{self.name}")


class StreamRouter(io.TextIOBase):
    """A text file that sends each write to the writing cell's kernel.

    ``isatty`` is what :meth:`isatty` answers (libraries use it to decide on
    colours and progress bars); with ``echo`` every write is also copied to
    the original stream -- a blocking write, so only for debugging a kernel.
    """

    def __init__(self, name, original, fallback=None, isatty=False, echo=False):
        super().__init__()
        self.name = name
        #: the stream this router replaced; restored by the host at shutdown
        self.original = original
        #: callable returning the kernel that gets output from outside any cell
        self.fallback = fallback
        self._isatty = isatty
        self._echo = echo

    encoding = "utf-8"
    errors = "replace"

    def writable(self):
        return True

    def isatty(self):
        return self._isatty

    def register_hook(self, hook):
        """Register *hook* on the calling cell's kernel stream (see KernelStream.register_hook)."""
        self._stream().register_hook(hook)

    def unregister_hook(self, hook):
        return self._stream().unregister_hook(hook)

    def _stream(self):
        kernel, _ = self._target()
        if kernel is None:
            raise RuntimeError(f"sys.{self.name}: not called from a gkernel cell")
        return kernel.streams[self.name]

    def fileno(self):
        # Output through the fd would bypass the cell; fd-level capture is
        # what makes it reach the cell (a separate component).
        raise io.UnsupportedOperation("fileno: gkernel's sys streams are not backed by a file descriptor")

    def _target(self):
        cell = current_cell()
        if cell is not None:
            return cell.kernel, cell.parent
        kernel = self.fallback() if self.fallback else None
        if kernel is not None and kernel.last_parent is not None:
            return kernel, kernel.last_parent
        return None, None

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        if self._echo:
            self.original.write(text)
        kernel, parent = self._target()
        if kernel is None:
            return self.original.write(text)
        kernel.streams[self.name].write(text, parent)
        return len(text)

    def flush(self):
        kernel, _ = self._target()
        if kernel is None:
            self.original.flush()
        else:
            kernel.streams[self.name].flush()
