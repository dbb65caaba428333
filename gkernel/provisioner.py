"""A jupyter_client kernel provisioner that puts kernels in a ``gkernel serve`` host.

Registered under the ``jupyter_client.kernel_provisioners`` entry point as
``gkernel-serve``; ``gkernel install --serve`` writes a kernelspec that
selects it. KernelManager, nbclient and jupyter_server then start kernels
inside a host without a line of client code changing: :meth:`launch_kernel`
asks the newest running host (or one it starts, detached, so later kernels
find it) to create a kernel and returns that kernel's connection info.

Life-cycle calls map onto the management API: poll/wait look the kernel up,
kill/terminate shut it down, SIGINT interrupts it. The kernelspec declares
``interrupt_mode: message``, so KernelManager usually interrupts through the
kernel's control channel itself, which reaches even a CPU-bound cell.

The API calls are short requests on loopback, made from a worker thread
(``asyncio.to_thread``): a host that is slow, hung or gone never blocks the
event loop (jupyter_server's). A host whose process is gone (dead, a zombie,
its pid reused) is noticed at once, without a request; one that does not
answer within a second is passed over for another or a new one.
"""

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time

import zmq
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Float, Unicode

from ._trust import PrivacyError, claim_file
from .manage import HostClient, HostError, host_files

#: seconds a host has to answer before a provisioner passes it over
PING_TIMEOUT = 1.0

__all__ = ["ServeProvisioner"]


#: the hosts this process started (they outlive the kernels that started them): kept, and polled,
#: so that an ended host is reaped rather than left a zombie or reported as still running when collected
_started_hosts = []


def _keep_for_reaping(proc):
    _started_hosts[:] = [host for host in _started_hosts if host.poll() is None]
    _started_hosts.append(proc)


class ServeProvisioner(KernelProvisionerBase):
    host_file = Unicode("", help="Host file of the host to use (default: the newest running one, "
                                 "or a new one started on demand).").tag(config=True)
    host_start_timeout = Float(30.0, help="Seconds to wait for a host started on demand.").tag(config=True)
    host_shutdown_no_kernels_timeout = Float(
        300.0, help="A host started on demand ends once it has had no kernel for this many seconds "
                    "(0: it runs until `gkernel serve stop`)."
    ).tag(config=True)

    kernel_id_in_host = None
    _client = None
    #: the connection info a restart reuses, so connected clients keep working
    _restart_info = None

    @property
    def has_process(self):
        return self.kernel_id_in_host is not None

    async def pre_launch(self, **kwargs):
        kwargs = await super().pre_launch(**kwargs)
        kwargs.setdefault("cmd", self.kernel_spec.argv)
        return kwargs

    def _encrypt(self):
        """Whether the manager asks for CurveZMQ (jupyter_client 8.9+'s transport_encryption).

        Its own provisioner writes the key pair into the connection file; here the host makes
        the kernel's (a restart brings the former kernel's back, in its connection info).
        """
        policy = str(getattr(self.parent, "transport_encryption", "disabled")).lower()
        if policy == "required" and not zmq.has("curve"):
            raise HostError("transport_encryption='required', but this libzmq has no CurveZMQ")
        return policy in ("auto", "required") and zmq.has("curve")

    async def launch_kernel(self, cmd, **kwargs):
        client = await self._host()
        encrypt = self._encrypt()
        try:
            kernel = await asyncio.to_thread(client.create, self._restart_info, encrypt)
        except HostError:
            if self.host_file or not client.gone():
                raise
            # It ended (its timeout without kernels, or killed) since we found it: use a new one.
            client.close()
            self._client = None
            kernel = await asyncio.to_thread((await self._host()).create, self._restart_info, encrypt)
        self._restart_info = None
        self.kernel_id_in_host = kernel["id"]
        info = dict(kernel["connection"])
        info["key"] = info["key"].encode()
        self.connection_info = info
        return info

    async def _host(self):
        """A client of a host that answers: the configured one, a running one, or a new one."""
        if self._client is not None and self._client.gone():
            self._client.close()
            self._client = None  # (a restart after the host died gets a new host)
        if self._client is None:
            if self.host_file:
                self._client = HostClient(self.host_file)
            else:
                self._client = await self._answering_host() or await self._find_or_start_host()
        return self._client

    async def _answering_host(self):
        """A client of the newest running host that answers within PING_TIMEOUT, or None."""
        for path in host_files():
            try:
                client = HostClient(path)
            except HostError:
                continue
            if await asyncio.to_thread(client.ping, PING_TIMEOUT):
                return client
            client.close()
        return None

    async def _find_or_start_host(self):
        """Under a lock file, so kernels started at once by several managers share one new host."""
        from jupyter_core.paths import jupyter_runtime_dir

        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        path = os.path.join(runtime, "gkernel-serve.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise HostError(f"cannot open the lock file {path}: {exc}") from None
        with os.fdopen(fd, "w") as lock:
            try:
                claim_file(fd, path)  # else whoever planted it decides when we start hosts
            except PrivacyError as exc:
                raise HostError(f"refusing the lock file: {exc}") from None
            # The holder pings hosts (PING_TIMEOUT each) and may start one: bounded, a hung holder too.
            deadline = time.monotonic() + self.host_start_timeout + 10 * PING_TIMEOUT
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise HostError(f"another process has held {path} for over "
                                        f"{self.host_start_timeout + 10 * PING_TIMEOUT:g} s") from None
                    await asyncio.sleep(0.02)
            try:
                return await self._answering_host() or HostClient(await self._start_host(runtime))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _start_host(self, runtime):
        """Start a detached host (it outlives this process) and wait for its host file."""
        with open(os.path.join(runtime, "gkernel-serve.log"), "a") as log:
            command = [sys.executable, "-m", "gkernel.cli", "serve",
                       f"--shutdown-no-kernels-timeout={self.host_shutdown_no_kernels_timeout:g}"]
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=log, start_new_session=True)
        _keep_for_reaping(proc)
        path = os.path.join(runtime, f"gkernel-serve-{proc.pid}.json")  # (written whole: os.replace)
        deadline = time.monotonic() + self.host_start_timeout
        while time.monotonic() < deadline:
            if os.path.exists(path):
                return path
            if proc.poll() is not None:
                raise HostError(f"gkernel serve exited with {proc.returncode} (see {log.name})")
            await asyncio.sleep(0.05)
        raise HostError(f"gkernel serve did not start within {self.host_start_timeout:g} s (see {log.name})")

    def _alive(self):
        """Whether the kernel still runs: False at once if its host is gone; True if the host is
        only slow to answer (hung is not dead)."""
        if self._client.gone():
            return False
        try:
            return any(k["id"] == self.kernel_id_in_host for k in self._client.request("list", PING_TIMEOUT)["kernels"])
        except HostError:
            return not self._client.gone()

    async def poll(self):
        if self.kernel_id_in_host is None or self._client is None:
            return 0
        return None if await asyncio.to_thread(self._alive) else 0

    async def wait(self):
        while await self.poll() is None:
            await asyncio.sleep(0.05)
        return 0

    async def send_signal(self, signum):
        if signum == signal.SIGINT:
            await asyncio.to_thread(self._client.interrupt, self.kernel_id_in_host)
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            await self.kill()

    async def kill(self, restart=False):
        if self.kernel_id_in_host is not None and self._client is not None:
            try:
                await asyncio.to_thread(self._client.shutdown, self.kernel_id_in_host)
            except HostError:
                pass  # already gone

    async def terminate(self, restart=False):
        await self.kill(restart)

    async def cleanup(self, restart=False):
        if restart and self.connection_info:
            self._restart_info = {**self.connection_info, "key": self.connection_info["key"].decode()}
        self.kernel_id_in_host = None
        if self._client is not None and not restart:
            self._client.close()
            self._client = None

    async def get_provisioner_info(self):
        info = await super().get_provisioner_info()
        info.update(kernel_id_in_host=self.kernel_id_in_host,
                    host_file=self._client.host_file if self._client else self.host_file)
        return info

    async def load_provisioner_info(self, provisioner_info):
        await super().load_provisioner_info(provisioner_info)
        self.kernel_id_in_host = provisioner_info.get("kernel_id_in_host")
        self.host_file = provisioner_info.get("host_file") or ""

    def get_shutdown_wait_time(self, recommended=5.0):
        return min(recommended, 5.0)
