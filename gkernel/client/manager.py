"""A cooperative version of jupyter_client's KernelManager.

jupyter_client's KernelManager wraps asynchronous methods in ``run_sync``,
which runs an asyncio loop per call; greenlets of one thread cannot share it.
:class:`GreenKernelManager` keeps everything that is not waiting (kernelspecs,
connection files, ports, the provisioner that builds the command line and
launches the process) and replaces every wait with a cooperative one: the
process is polled between ``gevent.sleep`` calls.

The provisioner's steps are coroutines. LocalProvisioner's (and most others')
finish without ever waiting on their loop, so they are run here to completion
without one (:func:`_completed`); a provisioner that does wait is refused with
:class:`ProvisionerError`.
"""

import functools
import signal
from time import monotonic

import gevent
from jupyter_client.manager import KernelManager
from traitlets import DottedObjectName

from .errors import KernelTimeoutError, ProvisionerError
from .kernelclient import shared_context

__all__ = ["GreenKernelManager", "start_new_kernel"]


_NEEDS_LOOP = "the kernel's provisioner waits on an asyncio loop; GreenKernelManager runs only provisioners that do not"


def _completed(coroutine):
    """The result of a coroutine that finishes without waiting on an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    except RuntimeError as exc:
        if "no running event loop" in str(exc):  # what asyncio.sleep & co. raise without a loop
            raise ProvisionerError(_NEEDS_LOOP) from exc
        raise
    coroutine.close()
    raise ProvisionerError(_NEEDS_LOOP)


def _without_loop(async_method):
    """A synchronous method running ``async_method`` with :func:`_completed`."""

    @functools.wraps(async_method)
    def method(self, *args, **kwargs):
        return _completed(async_method(self, *args, **kwargs))

    return method


class GreenKernelManager(KernelManager):
    """Start, interrupt, restart and shut down a kernel process from greenlets: no threads, no asyncio.

    Every public method of KernelManager is here and synchronous; the waiting
    ones (shutdown, restart, :meth:`wait`) yield to other greenlets while the
    process winds down. Its clients are :class:`GreenKernelClient`.
    """

    client_class = DottedObjectName("gkernel.client.GreenKernelClient", config=True)

    def _context_default(self):
        # Shared with the clients; KernelManager destroys only a context it created.
        return shared_context()

    # Steps that never wait: jupyter_client's own code, run without a loop.
    pre_start_kernel = _without_loop(KernelManager._async_pre_start_kernel)
    post_start_kernel = _without_loop(KernelManager._async_post_start_kernel)
    _launch_kernel = _without_loop(KernelManager._async_launch_kernel)
    request_shutdown = _without_loop(KernelManager._async_request_shutdown)
    cleanup_resources = _without_loop(KernelManager._async_cleanup_resources)
    _send_kernel_sigterm = _without_loop(KernelManager._async_send_kernel_sigterm)
    signal_kernel = _without_loop(KernelManager._async_signal_kernel)
    is_alive = _without_loop(KernelManager._async_is_alive)

    def start_kernel(self, **kw):
        """Launch the kernel process; returns once it runs, before it answers (see :meth:`client`)."""
        self._attempted_start = True
        kernel_cmd, kw = self.pre_start_kernel(**kw)
        self.log.debug("Starting kernel: %s", kernel_cmd)
        self._launch_kernel(kernel_cmd, **kw)
        self.post_start_kernel(**kw)

    def wait(self, timeout=None, pollinterval=0.05):
        """Wait cooperatively for the process to end; False if it still runs after ``timeout`` seconds."""
        deadline = None if timeout is None else monotonic() + timeout
        while self.is_alive():
            if deadline is not None and monotonic() >= deadline:
                return False
            gevent.sleep(pollinterval)
        if self.has_kernel:
            _completed(self.provisioner.wait())  # reaps the process and closes its pipes
        return True

    def finish_shutdown(self, waittime=None, pollinterval=0.05, restart=False):
        """After a shutdown request: wait half of ``waittime``, then SIGTERM, wait again, then SIGKILL."""
        if waittime is None:
            waittime = max(self.shutdown_wait_time, 0)
        if self.provisioner:
            waittime = self.provisioner.get_shutdown_wait_time(recommended=waittime)
        if self.wait(waittime / 2, pollinterval):
            return
        self.log.debug("Kernel is taking too long to finish, terminating")
        self._send_kernel_sigterm()
        if not self.wait(waittime / 2, pollinterval):
            self.log.debug("Kernel is taking too long to finish, killing")
            self._kill_kernel(restart=restart)

    def _kill_kernel(self, restart=False):
        if self.has_kernel:
            _completed(self.provisioner.kill(restart=restart))
            if not self.wait(5.0):
                self.log.warning("Wait for final termination of kernel timed out - continuing...")

    def shutdown_kernel(self, now=False, restart=False):
        """Stop the kernel: interrupt, ask on the control channel, then signals (``now``: kill at once)."""
        if not self.owns_kernel:
            return
        self.shutting_down = True
        self.stop_restarter()
        if self.has_kernel:
            self.interrupt_kernel()
        if now:
            self._kill_kernel(restart=restart)
        else:
            self.request_shutdown(restart=restart)
            self.finish_shutdown(restart=restart)
        self.cleanup_resources(restart=restart)

    def restart_kernel(self, now=False, newports=False, **kw):
        """Shut down and start again with the same arguments (and ports, unless ``newports``)."""
        if self._launch_args is None:
            raise RuntimeError("Cannot restart the kernel. No previous call to 'start_kernel'.")
        self.shutdown_kernel(now=now, restart=True)
        if newports:
            self.cleanup_random_ports()
        self._launch_args.update(kw)
        self.start_kernel(**self._launch_args)

    def interrupt_kernel(self):
        """SIGINT or an interrupt_request, as the kernelspec's ``interrupt_mode`` says."""
        if not self.has_kernel:
            raise RuntimeError("Cannot interrupt kernel. No kernel is running!")
        if self.kernel_spec.interrupt_mode == "signal":
            self.signal_kernel(signal.SIGINT)
        else:
            self._connect_control_socket()
            self.session.send(self._control_socket, self.session.msg("interrupt_request", content={}))


def start_new_kernel(startup_timeout=60, kernel_name="python3", **kwargs):
    """Start a kernel and a connected client, as jupyter_client's ``start_new_kernel`` does; returns ``(km, kc)``.

    If the kernel does not answer within ``startup_timeout`` seconds it is shut
    down and :class:`KernelTimeoutError` raised; if it dies, KernelDiedError.
    """
    km = GreenKernelManager(kernel_name=kernel_name)
    km.start_kernel(**kwargs)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=startup_timeout)
    except (KernelTimeoutError, RuntimeError):
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc
