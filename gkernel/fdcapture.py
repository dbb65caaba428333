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
returns at once. What is new is read from a separate descriptor in
``chunk_size`` pieces, and the pages read are freed (``fallocate(PUNCH_HOLE)``),
so memory holds only what is unread.

Order with Python-level output. The stream router asks a capture before it
buffers Python-level text whether fd-level output is waiting (``unread``),
and has it read first: ``print(1); os.write(1, b"2"); print(3)`` shows 1, 2,
3. That question comes twice per ``print``, so it must not cost a system call
(an ``lseek`` per write was 40% of a print's cost). :class:`WriteSignal`
answers it from memory: an inotify watch on the captured files, set to raise
``SIGIO`` in the main thread at each write (``O_ASYNC``), whose handler sets
``unread``; reading then reads both files (their events share one queue,
see :meth:`WriteSignal.read`). The order argument: a write that *happened before* the router's
write -- by this thread, or by a child or thread the cell then waited for --
made the signal pending on the main thread before the wait returned, the
kernel delivers it on that return, and Python runs the handler before the
body of the next function called, the router's ``write``. Writes with no such
ordering (a thread or child running concurrently) are read when the router
or the hub next looks, as before. A drawback of any signal: C code blocking
in ``poll``/``select``/``nanosleep`` while a child or thread writes output
may see ``EINTR`` (the handler is installed with ``SA_RESTART``, so reads,
writes and waits restart); and a cell that installs a SIGIO handler of its
own turns the ordering off (its output still arrives, from the hub). Where
inotify is unavailable (its per-user instance limit,
``fs.inotify.max_user_instances``), ``unread`` stays True: each router write
then asks the file (one ``lseek``).

The hub reads too, for output written outside cells or by background
children: when the inotify descriptor becomes readable, at most every
``poll_interval`` seconds (without inotify, a timer every ``poll_interval``);
an idle kernel does not wake up. The kernel asks ``unread`` at the end of each
request too (:meth:`FdCapture.poll_if_written`): nothing to read, no system call.

Thread affinity: hub thread only (the main thread). Process-wide: a process
has one fd 1, so its host owns the captures and their signal; :meth:`close`
restores the original fds.
"""

import codecs
import ctypes
import fcntl
import os
import signal
import struct

from gevent import get_hub

__all__ = ["FdCapture", "WriteSignal", "flush_c_stdio"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_PAGE = os.sysconf("SC_PAGE_SIZE")
_IN_MODIFY = 0x02
_INOTIFY_EVENT = 16  # bytes of an event without a name (a watched file's own events have none)
_F_SETOWN_EX, _F_OWNER_TID = 15, 0  # <fcntl.h>; Python's fcntl module has neither
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


def flush_c_stdio():
    """Flush C's stdio buffers, so a C extension's printf reaches the fd now."""
    _libc.fflush(None)


def _checked(result, call):
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{call}: {os.strerror(errno)}")
    return result


class WriteSignal:
    """Sets ``unread`` on *captures* whenever their files are written; the hub then polls them.

    One inotify instance per process, however many captures (users have few:
    128 by default). Raises OSError where inotify is unavailable and
    ValueError outside the main thread, leaving the captures as they were.
    """

    def __init__(self, captures, poll_interval=0.01):
        self._fd = _checked(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")
        try:
            for capture in captures:
                _checked(_libc.inotify_add_watch(self._fd, f"/proc/self/fd/{capture.file}".encode(), _IN_MODIFY),
                         "inotify_add_watch")
            self._previous = signal.signal(signal.SIGIO, self._on_signal)
        except BaseException:
            os.close(self._fd)
            raise
        self._captures = list(captures)
        signal.siginterrupt(signal.SIGIO, False)
        # To the main thread, whose id is the process id: the thread that runs Python's handlers,
        # so a write by the main thread itself is seen on the way back from that write.
        fcntl.fcntl(self._fd, _F_SETOWN_EX, struct.pack("ii", _F_OWNER_TID, os.getpid()))
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) | os.O_ASYNC)
        loop = get_hub().loop
        self._later = loop.timer(poll_interval)
        self._readable = loop.io(self._fd, 1)
        self._readable.start(self._on_readable)
        for capture in self._captures:
            capture.signalled_by(self)

    def _on_signal(self, signum, frame):
        for capture in self._captures:
            capture.unread = True
        if callable(self._previous):
            self._previous(signum, frame)

    def read(self, target=None):
        """Read every capture: the event queue is the captures' together, so emptying it for one
        must be reading all (fd 2's output waits in its file, with nothing left to signal it).

        The queue is emptied so that the next write raises the signal again
        (inotify merges an event into an identical one still queued, without a
        new signal), after ``unread`` is cleared and before the files are read.
        """
        for capture in self._captures:
            capture.unread = False
        try:
            while len(os.read(self._fd, 4096)) > 4096 - _INOTIFY_EVENT:
                pass  # a full read: more may be queued
        except BlockingIOError:
            pass
        for capture in self._captures:
            capture.read(target)

    def _on_readable(self):
        # Written outside any router write (a background child, code outside cells): read
        # poll_interval later, so a chatty child wakes the hub at most that often.
        self._readable.stop()
        self._later.start(self._read_all)

    def _read_all(self):
        self._readable.start(self._on_readable)
        self.read()

    def forget(self):
        """In a forked child: never touch the event queue, which is the parent's (once per child)."""
        if self._fd is None:
            return
        self._readable.close()
        self._later.close()
        os.close(self._fd)
        self._fd = None
        self._captures = []

    def close(self):
        fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_ASYNC)
        self.forget()
        signal.signal(signal.SIGIO, self._previous if self._previous is not None else signal.SIG_DFL)


class FdCapture:
    """Captures file descriptor *fd*; ``sink(text, target)`` receives the decoded text.

    *target* is what the caller of :meth:`poll` passed (the writing cell's
    kernel and request, when a stream router polls), or None from the hub.
    The hub polls when the :class:`WriteSignal` sees the file written, or
    without one every ``poll_interval`` seconds.
    """

    def __init__(self, fd, sink, poll_interval=0.01, chunk_size=1 << 16, free_size=1 << 20):
        self.fd = fd
        self.sink = sink
        self.chunk_size = chunk_size
        self.free_size = free_size
        #: the memfd that *fd* points at
        self.file = os.memfd_create(f"gkernel-fd{fd}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        # Truncation would destroy unread output: `echo x > /dev/stdout` in a
        # shell opens the file anew with O_TRUNC. Sealed, that open fails with
        # a clear error instead (`>>` and `>&1` work).
        fcntl.fcntl(self.file, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        # What *fd* becomes: the file opened anew by path, because writes through memfd_create's
        # own descriptor raise no inotify event (Linux 6.x: pseudo files). O_APPEND: the kernel
        # and its children share it; appends never interleave.
        writer = os.open(f"/proc/self/fd/{self.file}", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        # A descriptor of its own for reading, and how far it has read.
        self._reader_fd = os.open(f"/proc/self/fd/{self.file}", os.O_RDONLY | os.O_CLOEXEC)
        self._offset = 0
        self._freed = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._polling = False
        #: whether output may be waiting: the stream router's cheap question before each write
        #: (always True without a write signal: then :meth:`poll` asks the file)
        self.unread = True
        self._write_signal = None
        #: the original descriptor, kept open to restore it; write there to bypass the capture
        self.saved_fd = os.dup(fd)
        os.dup2(writer, fd)
        os.close(writer)
        self._timer = get_hub().loop.timer(poll_interval, poll_interval)
        self._timer.start(self.poll)

    def signalled_by(self, write_signal):
        """From now on *write_signal* sets ``unread`` and has the hub poll (no timer)."""
        self._timer.close()
        self._write_signal = write_signal

    def original_stream(self):
        """A line-buffered text file on the original descriptor (for logs and echo)."""
        return open(self.saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                    closefd=False)

    def poll(self, target=None):
        """Hand everything written so far to the sink: with a write signal, that of every capture
        (fd 2's output written before a print to fd 1 goes first too). The stream router asks
        ``unread`` first."""
        if self._write_signal is not None:
            self._write_signal.read(target)
        else:
            self.read(target)

    def poll_if_written(self, target=None):
        """:meth:`poll`, if ``unread`` says something may be waiting. (A function, so that a
        signal raised by a write just before the call has run its handler when this asks.)"""
        if self.unread:
            self.poll(target)

    def read(self, target=None):
        """Hand what was written to this capture's file so far to the sink."""
        if self._polling:
            return  # the sink waits for IOPub room and the hub polled meanwhile
        end = os.lseek(self._reader_fd, 0, os.SEEK_END)
        if end == self._offset:
            return
        self._polling = True
        try:
            while self._offset < end:
                data = os.pread(self._reader_fd, min(self.chunk_size, end - self._offset), self._offset)
                if not data:
                    break
                self._offset += len(data)
                text = self._decoder.decode(data)
                if text:
                    self.sink(text, target)
            self._free_read_pages()
        finally:
            self._polling = False

    def _free_read_pages(self):
        upto = self._offset - self._offset % _PAGE
        if upto - self._freed >= self.free_size:
            if _libc.fallocate(self.file, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, 0, upto) == 0:
                self._freed = upto

    def forget(self):
        """In a forked child: stop reading (the parent reads), keep the fd as it is."""
        self._timer.close()
        if self._write_signal is not None:
            self._write_signal.forget()
            self._write_signal = None
        self._polling = True  # poll() and read() become no-ops

    def close(self):
        """Deliver what is left, then give the fd back its original target (before the write signal's close)."""
        self._timer.close()
        flush_c_stdio()
        self.read()
        os.dup2(self.saved_fd, self.fd)
        for fd in (self._reader_fd, self.file, self.saved_fd):
            os.close(fd)
