"""What a process hosting kernels sets up once, whatever the number of kernels.

``sys.stdout``/``sys.stderr``, file descriptors 1 and 2, fork hooks, thread
start, the CPU-time signal, the hub's error policy, the ``comm`` package's
functions and IPython's singleton shell (``get_ipython()``,
``sys.displayhook``) are process-wide; the kernels of a process share them.
:class:`ProcessRuntime` installs them for the kernels that ``kernels()``
returns (one for ``python -m gkernel``, many for ``gkernel serve``) and
undoes what can be undone at :meth:`stop`.

Where process-wide output goes (the README's routing rule): text written by a
cell's greenlet or thread goes to that cell's kernel; fd-level text to the
kernel whose cell collected it (a ``print`` or the end of a request), else to
the kernel that most recently ran a cell; text from outside any cell to that
kernel's most recent cell too, or to the process's own stream when no kernel
has run a cell yet.
"""

import os
import sys

from . import comms
from .cells import follow_threads
from .cpuwatch import CpuWatch
from .debugger import DebugServer
from .forks import ForkRelay
from .outstream import STREAM_NAMES, StreamRouter

__all__ = ["ProcessRuntime", "serve_until"]


class ProcessRuntime:
    """The process-wide runtime of the kernels ``kernels()`` returns (main thread only)."""

    def __init__(self, kernels, log, capture_fd=True, isatty=False, echo=False):
        self.kernels = kernels
        self.log = log
        self.capture_fd = capture_fd
        self.isatty = isatty
        self.echo = echo
        #: control, output and time-slicing while a greenlet of a cell holds the CPU
        self.cpu_watch = CpuWatch()
        #: forked children's output, and their end (see gkernel.forks)
        self.fork_relay = ForkRelay(kernels, log)
        #: the process's debugger (pydevd), shared by the kernels' debugging sessions
        self.debug_server = DebugServer(log)
        self.captures = {}
        #: tells the captures when their files are written (see gkernel.fdcapture)
        self._write_signal = None
        self._originals = None
        self._log_stream = None

    def start(self):
        import gevent

        # As at the IPython prompt: the working directory first on the import path, and
        # matplotlib figures shown inline at the end of a cell without any magic.
        if sys.path[:1] != [""]:
            sys.path.insert(0, "")
        os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self._originals = sys.stdout, sys.stderr
        targets = dict(zip(STREAM_NAMES, self._originals))
        if self.capture_fd:
            from .fdcapture import FdCapture, WriteSignal

            for fd, name in enumerate(STREAM_NAMES, start=1):
                targets[name].flush()
                self.captures[name] = FdCapture(fd, self._fd_sink(name))
                # Our log and echo go where fd 1/2 went before: never into a cell.
                targets[name] = self.captures[name].original_stream()
            try:
                self._write_signal = WriteSignal(self.captures.values())
            except (OSError, ValueError) as error:
                self.log.warning("fd-level output is checked with a system call per write (slower print): %s",
                                 error)
            self._log_stream = targets["stderr"]
            self._redirect_log(self._originals[1], self._log_stream)
        sys.stdout, sys.stderr = (
            StreamRouter(name, targets[name], self.most_recent_kernel, isatty=self.isatty, echo=self.echo,
                         capture=self.captures.get(name))
            for name in STREAM_NAMES
        )
        follow_threads()
        comms.install(self.most_recent_kernel)
        self.fork_relay.install()
        self.cpu_watch.install()
        _contain_greenlet_errors(gevent.get_hub())

    def stop(self):
        """Restore the streams and fds, and IPython's singleton (after the kernels closed)."""
        self.debug_server.close()
        self.fork_relay.end_children()  # they hold our ports: a restart must be able to bind them
        shell = sys.modules.get(f"{__package__}.shell")  # imported by the first kernel's shell
        if shell is not None:
            shell.uninstall_process_hooks()
        self.cpu_watch.uninstall()
        comms.uninstall()
        sys.stdout, sys.stderr = self._originals
        for capture in self.captures.values():
            capture.close()
        if self._write_signal is not None:
            self._write_signal.close()
            self._write_signal = None
        if self._log_stream is not None:
            self._redirect_log(self._log_stream, self._originals[1])
        self.captures = {}

    def most_recent_kernel(self):
        """The kernel that most recently started a (non-silent) cell, or None."""
        active = [kernel for kernel in self.kernels() if kernel.last_parent is not None]
        return max(active, key=lambda kernel: kernel.last_parent_at, default=None)

    def _fd_sink(self, name):
        def sink(text, target):
            kernel, parent = target or (self.most_recent_kernel(), None)
            if kernel is None:
                self._originals[STREAM_NAMES.index(name)].write(text)
            else:
                kernel.output.write(name, text, parent or kernel.last_parent)
        return sink

    def _redirect_log(self, old, new):
        for handler in self.log.handlers:
            if getattr(handler, "stream", None) is old:
                handler.setStream(new)


def serve_until(event, log):
    """Wait for *event* in the main greenlet; what the hub throws at it is logged, not fatal.

    gevent sends errors of callbacks that have no greenlet to the main greenlet.
    """
    while not event.is_set():
        try:
            event.wait()
        except Exception:
            log.exception("an error reached the main greenlet; still serving")


def _contain_greenlet_errors(hub):
    """Report what escapes a user greenlet in its cell; never let it end the kernel.

    By default gevent re-raises SystemExit and KeyboardInterrupt from any
    greenlet in the main greenlet, which would end the kernel when a
    background greenlet calls ``sys.exit()``, and does not even print a
    SystemExit. Here every exception but GreenletExit is printed and none is
    re-raised. The hub prints from the failing greenlet, so the report goes
    to that greenlet's cell, formatted by its kernel's IPython shell, from the
    greenlet's first frame outside gevent.
    """
    from gevent import GreenletExit

    from .cells import current_cell

    hub.SYSTEM_ERROR = ()
    hub.NOT_ERROR = (GreenletExit,)
    print_exception = hub.print_exception

    def print_exception_in_cell(context, exc_type, value, tb):
        cell = current_cell()
        shell = cell.kernel.shell if cell is not None else None
        if shell is None or not isinstance(value, BaseException):
            return print_exception(context, exc_type, value, tb)
        sys.stderr.write(shell.format_exception(value) + f"\n{context!r} failed with {exc_type.__name__}\n")

    hub.print_exception = print_exception_in_cell
