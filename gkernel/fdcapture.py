"""fd-level capture: what is written to file descriptors 1 and 2 reaches the cells.

``os.write(1, ...)``, ``os.system``, subprocesses and C extensions' printf
write to the process's fds, below ``sys.stdout``. :class:`FdCapture` points
such an fd at a file the hub reads cooperatively.

Why a memfd and not a pipe: a cell runs in the hub's own OS thread, so if fd 1
were a pipe read by a greenlet, one write larger than the pipe's capacity from
that thread (C code, ``os.write``) would block before the reader could ever
run -- a deadlock no pipe size removes. The reference kernel avoids it with a
reader thread; we avoid it by never blocking the writer: fd 1 becomes an
append-only in-memory file (``memfd_create``), to which a write of any size
returns at once. A hub timer polls the file's end every ``poll_interval``
seconds, reads what is new from a separate descriptor in ``chunk_size``
pieces, and frees the pages it has read (``fallocate(PUNCH_HOLE)``), so memory holds only what is unread.
The stream router polls too before it buffers Python-level text, which keeps
Python-level and fd-level writes in order (one ``lseek`` per write: see ``offset``).

Thread affinity: hub thread only. Process-wide: a process has one fd 1, so
its host owns the captures; :meth:`close` restores the original fds.
"""

import codecs
import ctypes
import fcntl
import os

from gevent import get_hub

__all__ = ["FdCapture", "flush_c_stdio"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PAGE = os.sysconf("SC_PAGE_SIZE")
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def flush_c_stdio():
    """Flush C's stdio buffers, so a C extension's printf reaches the fd now."""
    _libc.fflush(None)


class FdCapture:
    """Captures file descriptor *fd*; ``sink(text, target)`` receives the decoded text.

    *target* is what the caller of :meth:`poll` passed (the writing cell's
    kernel and request, when a stream router polls), or None from the timer.
    """

    def __init__(self, fd, sink, poll_interval=0.01, chunk_size=1 << 16, free_size=1 << 20):
        self.fd = fd
        self.sink = sink
        self.chunk_size = chunk_size
        self.free_size = free_size
        self._file = os.memfd_create(f"gkernel-fd{fd}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        # Truncation would destroy unread output: `echo x > /dev/stdout` in a
        # shell opens the file anew with O_TRUNC. Sealed, that open fails with
        # a clear error instead (`>>` and `>&1` work).
        fcntl.fcntl(self._file, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        # O_APPEND: the kernel and its children share this file; appends never interleave.
        fcntl.fcntl(self._file, fcntl.F_SETFL, fcntl.fcntl(self._file, fcntl.F_GETFL) | os.O_APPEND)
        #: a descriptor of its own for reading, and how far it has read: a
        #: writer checks ``lseek(reader_fd, 0, SEEK_END) != offset`` to see unread output
        self.reader_fd = os.open(f"/proc/self/fd/{self._file}", os.O_RDONLY | os.O_CLOEXEC)
        self.offset = 0
        self._freed = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._polling = False
        #: the original descriptor, kept open to restore it; write there to bypass the capture
        self.saved_fd = os.dup(fd)
        os.dup2(self._file, fd)
        self._timer = get_hub().loop.timer(poll_interval, poll_interval)
        self._timer.start(self.poll)

    def original_stream(self):
        """A line-buffered text file on the original descriptor (for logs and echo)."""
        return open(self.saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                    closefd=False)

    def poll(self, target=None):
        """Hand everything written so far to the sink."""
        if self._polling:
            return  # the sink waited for IOPub room and the timer fired meanwhile
        end = os.lseek(self.reader_fd, 0, os.SEEK_END)
        if end == self.offset:
            return
        self._polling = True
        try:
            while self.offset < end:
                data = os.pread(self.reader_fd, min(self.chunk_size, end - self.offset), self.offset)
                if not data:
                    break
                self.offset += len(data)
                text = self._decoder.decode(data)
                if text:
                    self.sink(text, target)
            self._free_read_pages()
        finally:
            self._polling = False

    def _free_read_pages(self):
        upto = self.offset - self.offset % _PAGE
        if upto - self._freed >= self.free_size:
            if _libc.fallocate(self._file, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, upto) == 0:
                self._freed = upto

    def forget(self):
        """In a forked child: stop reading (the parent reads), keep the fd as it is."""
        self._timer.close()
        self._polling = True  # poll() becomes a no-op

    def close(self):
        """Deliver what is left, then give the fd back its original target."""
        self._timer.close()
        flush_c_stdio()
        self.poll()
        os.dup2(self.saved_fd, self.fd)
        for fd in (self.reader_fd, self._file, self.saved_fd):
            os.close(fd)
