"""Shell commands from cells (``!cmd``, ``x = !cmd``, ``%pip``), waited on cooperatively.

IPython runs ``!cmd`` through pexpect and ``x = !cmd`` through
``subprocess``; both block the calling OS thread unless the standard library
is monkey-patched, and a kernel thread then stalls every greenlet. Here the
command runs under ``gevent.subprocess`` (``os.system``'s: ``posix_spawn``) and
the hub waits for it and reads its output:

* :func:`run_streaming` gives the command a pseudo-terminal for stdout and
  stderr, as pexpect does, so programs line-buffer, keep their colours and
  merge both streams in the order they wrote them; each chunk goes to *write*
  as it arrives. Its stdin is ``/dev/null``: nobody could type into it, and a
  command that asks for input gets end-of-file instead of hanging the cell.
* :func:`run_capture` collects stdout and stderr through a pipe.
* :func:`run_inherited` is ``os.system`` in a monkey-patched kernel
  (:mod:`gkernel.patching`): the command keeps the kernel's descriptors, so
  its output goes through fd capture and streams while it runs.

An exception in the waiting greenlet (an interrupt) sends SIGINT to the
command's process group, then SIGKILL if it does not end within a second, and
propagates.
"""

import codecs
import errno
import os
import signal
import subprocess
import termios

import gevent
from gevent import os as green_os
from gevent import subprocess as green_subprocess
from gevent.os import make_nonblocking, nb_read

__all__ = ["run_streaming", "run_capture", "run_inherited"]

_SHELL = "/bin/sh"


def run_streaming(cmd, write):
    """Run shell command *cmd*; ``write(text)`` receives its output as it comes. Returns the exit code."""
    master, slave = os.openpty()
    try:
        # No CR before each LF: the text goes to a notebook, not to a terminal.
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        proc = green_subprocess.Popen(cmd, shell=True, executable=_SHELL, stdin=subprocess.DEVNULL,
                                      stdout=slave, stderr=slave, start_new_session=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    make_nonblocking(master)
    try:
        with _ended_on_error(proc):
            _pump(master, write)
            return proc.wait()
    finally:
        os.close(master)


def run_capture(cmd):
    """Run shell command *cmd*; return (stdout, stderr, exit code), decoded as UTF-8."""
    proc = green_subprocess.Popen(cmd, shell=True, executable=_SHELL, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    with _ended_on_error(proc):
        out, err = proc.communicate()
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), proc.returncode


def run_inherited(cmd):
    """Run shell command *cmd* as C's ``system()`` does; return its raw wait status, as ``os.system`` does.

    The command inherits stdin, stdout, stderr, every inheritable descriptor
    and the signal dispositions, like ``system()``'s, and is started the way
    glibc starts it (``posix_spawn``: no copy of the kernel's memory, none of
    the fork hooks a Python fork runs). Unlike it, the command gets a session
    of its own: an interrupt reaches it through the waiting greenlet, as for
    ``!cmd``, whether it came as a signal or as an ``interrupt_request``.
    """
    child = _Spawned([_SHELL, "-c", os.fspath(cmd)])
    with _ended_on_error(child):
        return child.wait()


class _Spawned:
    """A process started by ``posix_spawn`` in a session of its own, waited for through the hub.

    gevent's ``posix_spawn`` watches the child before the hub runs again, so
    its ``waitpid`` has the status even after libev's SIGCHLD handler reaped it.
    """

    def __init__(self, argv):
        # The handler first, as gevent.subprocess does: a child that ends before it is installed is
        # never reported, and its waitpid would wait forever.
        gevent.get_hub().loop.install_sigchld()
        self.pid = green_os.posix_spawn(argv[0], argv, os.environ, setsid=True)
        self._status = None

    def poll(self):
        """The raw wait status, or None while the process runs (as ``Popen.poll``)."""
        if self._status is None:
            pid, status = green_os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
        return self._status

    def wait(self):
        if self._status is None:
            self._status = green_os.waitpid(self.pid, 0)[1]
        return self._status


def _pump(fd, write):
    """Copy a pseudo-terminal's output to *write* until every writer has closed it."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while True:
        try:
            data = nb_read(fd, 1 << 16)
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: the last writer closed the terminal
                raise
            data = b""
        text = decoder.decode(data, final=not data)
        if text:
            write(text)
        if not data:
            return


class _ended_on_error:
    """On an exception (an interrupt, a kill), end the command's process group too (a Popen or a _Spawned)."""

    def __init__(self, proc):
        self.proc = proc

    def __enter__(self):
        return self.proc

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or self.proc.poll() is not None:
            return False
        _signal_group(self.proc, signal.SIGINT)
        try:
            with gevent.Timeout(1):
                self.proc.wait()
        except gevent.Timeout:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()
        return False


def _signal_group(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass
