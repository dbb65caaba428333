"""Many kernels in one process: the registry behind ``gkernel serve``.

Each kernel gets what a kernel process would have: its own ports (or ipc
paths), HMAC key, sockets, namespace, execution count, history session,
publisher, dispatcher and heartbeat endpoint. They share the process: the
hub, one libzmq context, one heartbeat thread, and the process-wide runtime
(:mod:`gkernel.process`).

A kernel ends when a client asks (shutdown_request, ``exit()``) or the host
does (:meth:`KernelHost.shutdown`); either way its sockets are closed and it
leaves the registry, so its namespace can be freed.

Hub thread only.
"""

import gc
import os
import sys
import time
import uuid

import gevent
import gevent.event
import zmq
from traitlets import Bool, CaselessStrEnum, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .cells import cell_greenlets
from .kernel import Kernel
from .transport import PLAINTEXT_WARNING, Transport, new_curve_keys

__all__ = ["KernelHost", "HostError"]


class HostError(Exception):
    """A request the host cannot carry out (unknown kernel, limit reached, ...)."""


class KernelHost(LoggingConfigurable):
    """Creates, tracks and ends the kernels of one process."""

    ip = Unicode("127.0.0.1", help="Address the kernels' channels bind to.").tag(config=True)
    transport = CaselessStrEnum(["tcp", "ipc"], "tcp", help="ZeroMQ transport of the kernels' channels.").tag(config=True)
    max_kernels = Integer(1000, help="Kernels this host runs at most; more are refused.").tag(config=True)
    iopub_hwm = Integer(
        1000, help="IOPub send high-water mark of each kernel (see gkernel kernel --help-all)."
    ).tag(config=True)
    cull_idle_timeout = Float(
        0, help="Shut down a kernel idle for this many seconds (0: never). A kernel is idle when no "
                "request is running in it; its background greenlets do not count."
    ).tag(config=True)
    cull_connected = Bool(False, help="Also cull idle kernels that still have clients connected.").tag(config=True)
    cull_interval = Float(10, help="Seconds between two looks for idle kernels.").tag(config=True)
    shutdown_no_kernels_timeout = Float(
        0, help="End the host once it has had no kernel for this many seconds (0: never). Hosts that the "
                "gkernel-serve provisioner starts on demand get ServeProvisioner.host_shutdown_no_kernels_timeout."
    ).tag(config=True)

    def __init__(self, context, process, heartbeat, **kwargs):
        import zmq.green

        super().__init__(**kwargs)
        self.context = context
        #: the process's :class:`~gkernel.heartbeat.Heartbeat`: one thread for all kernels
        self.heartbeat = heartbeat
        self._green_context = zmq.green.Context.shadow(context.underlying)
        self.process = process
        #: kernel id -> Kernel
        self.kernels = {}
        self._warned_plaintext = False
        self.started = time.time()
        self._culler = gevent.spawn(self._cull) if self.cull_idle_timeout > 0 else None
        self._shells = None
        #: set when the host has had no kernel for shutdown_no_kernels_timeout seconds
        self.deserted = gevent.event.Event()
        self._empty_since = time.monotonic()
        if self.shutdown_no_kernels_timeout > 0:
            gevent.spawn(self._watch_deserted)

    def _cull(self):
        while True:
            gevent.sleep(min(self.cull_interval, self.cull_idle_timeout))
            now = time.time()
            culled = []
            for kernel in self.kernels.values():
                idle = kernel.dispatcher.shell_greenlet is None and now - kernel.last_activity > self.cull_idle_timeout
                if idle and (self.cull_connected or not kernel.publisher.subscriptions):
                    self.log.warning("culling kernel %s, idle for %.0f s", kernel.id, now - kernel.last_activity)
                    culled.append(kernel)
            if culled:
                self._close(culled)

    def _watch_deserted(self):
        timeout = self.shutdown_no_kernels_timeout
        while not self.deserted.is_set():
            gevent.sleep(min(1.0, timeout / 4))
            if self.kernels:
                self._empty_since = None
            elif self._empty_since is None:
                self._empty_since = time.monotonic()
            elif time.monotonic() - self._empty_since >= timeout:
                self.log.warning("no kernel for %g s: ending the host", timeout)
                self.deserted.set()

    def create(self, info=None, kernel_id=None, encrypt=False):
        """Start a kernel; returns it. A restart passes the connection info and id to reuse.

        *encrypt*: give a new kernel a CurveZMQ key pair (a caller's connection info brings its own).
        """
        if len(self.kernels) >= self.max_kernels:
            raise HostError(f"this host already runs {len(self.kernels)} kernels (--max-kernels={self.max_kernels})")
        from .session import VerifyingSession as Session

        # Given connection info, this is a restart: the former kernel's clients are reconnecting.
        restart = bool(info)
        info = self._checked(info) if info else self._new_connection_info(encrypt)
        transport = self._bind(info)
        if transport.curve is None and info["transport"] == "tcp" and not self._warned_plaintext:
            self._warned_plaintext = True
            self.log.warning("%s (warned once for this host)", PLAINTEXT_WARNING)
        transport.green()
        session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"],
                          username="kernel", parent=self)
        kernel = Kernel(session, transport, kernel_id=kernel_id, spare_shells=self._spare_shells(),
                        clients_may_reconnect=restart, debug_server=self.process.debug_server, parent=self)
        kernel.captures = list(self.process.captures.values())
        kernel.start()
        self.kernels[kernel.id] = kernel
        gevent.spawn(self._end_when_asked, kernel)
        self.log.info("kernel %s started on %s", kernel.id, info["ip"])
        return kernel

    def _checked(self, info):
        """A caller's connection info, if this host may bind it: HostError otherwise.

        The caller chooses ports (a restart reuses its kernel's), never a
        wider address than the host was started with, nor a kernel without a
        key (it would run unsigned requests).
        """
        ports = {f"{name}_port": info.get(f"{name}_port", 0) for name in ("shell", "iopub", "stdin", "control", "hb")}
        for name, port in ports.items():
            if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
                raise HostError(f"create: connection {name} must be a port number, not {port!r}")
        key, scheme = info.get("key"), info.get("signature_scheme", "hmac-sha256")
        if not isinstance(key, str) or not key:
            raise HostError("create: connection key must be a non-empty string (a kernel without a key "
                            "would run unsigned requests)")
        if scheme not in ("hmac-sha256", "hmac-sha512", "hmac-md5", "hmac-sha1"):
            raise HostError(f"create: unsupported signature_scheme {scheme!r}")
        transport, ip = info.get("transport", self.transport), info.get("ip")
        if transport != self.transport:
            raise HostError(f"create: this host binds {self.transport}, not {transport!r} (--transport)")
        if transport == "tcp" and ip != self.ip:
            raise HostError(f"create: this host binds kernels on {self.ip}, not {ip!r} (--ip)")
        if transport == "ipc":
            from jupyter_core.paths import jupyter_runtime_dir

            if not isinstance(ip, str) or os.path.dirname(os.path.abspath(ip)) != os.path.abspath(jupyter_runtime_dir()):
                raise HostError(f"create: ipc paths must be in the runtime directory, not {ip!r}")
        checked = {"transport": transport, "ip": ip, "key": key, "signature_scheme": scheme, **ports}
        curve = {name: info[name] for name in ("curve_publickey", "curve_secretkey") if name in info}
        return {**checked, **curve}  # (the key pair is checked by the Transport)

    def _new_connection_info(self, encrypt=False):
        key = uuid.uuid4().hex
        ip = self.ip
        if self.transport == "ipc":
            # ipc "addresses" are path prefixes: one per kernel, in the private runtime directory.
            from jupyter_core.paths import jupyter_runtime_dir

            runtime = jupyter_runtime_dir()
            os.makedirs(runtime, mode=0o700, exist_ok=True)
            ip = os.path.join(runtime, f"gkernel-ipc-{key[:12]}")
        info = {"transport": self.transport, "ip": ip, "key": key, "signature_scheme": "hmac-sha256"}
        if encrypt:
            try:
                info.update(new_curve_keys())
            except ValueError as exc:
                raise HostError(f"create: {exc}") from None
        return info

    def _bind(self, info):
        deadline = time.monotonic() + 2
        while True:
            try:
                return Transport(self.context, info, self.heartbeat, iopub_hwm=self.iopub_hwm,
                                 green_context=self._green_context)
            except ValueError as exc:  # an unusable CurveZMQ key pair
                raise HostError(f"create: {exc}") from None
            except zmq.ZMQError as exc:
                # A restart rebinds the ports its predecessor just closed; zmq releases them asynchronously.
                if exc.errno != zmq.EADDRINUSE or "shell_port" not in info or time.monotonic() > deadline:
                    raise HostError(f"cannot bind a kernel's ports: {exc}") from exc
                gevent.sleep(0.02)

    def get(self, kernel_id):
        try:
            return self.kernels[kernel_id]
        except KeyError:
            raise HostError(f"no kernel {kernel_id!r} in this host") from None

    def _end_when_asked(self, kernel):
        kernel.shutdown_event.wait()
        if self.kernels.get(kernel.id) is kernel:
            self._close([kernel])

    def _close(self, kernels):
        """End ``kernels`` with one sweep for their cells' greenlets and one collection: O(heap), not O(n * heap)."""
        for kernel in kernels:
            del self.kernels[kernel.id]
            kernel.shutdown_event.set()
            kernel.stop_serving()
        gevent.killall(cell_greenlets(kernels), timeout=1)
        # Their forked children hold the kernels' ports (a restart rebinds them) and would outlive them.
        self.process.fork_relay.end_children({kernel.id for kernel in kernels})
        for kernel in kernels:
            kernel.release()
            self.log.info("kernel %s ended", kernel.id)
        # Kernels are full of reference cycles: collect them once our callers
        # have let go of them, rather than whenever the collector gets to them.
        gevent.get_hub().loop.run_callback(gc.collect)

    def shutdown(self, kernel_id, restart=False):
        """End a kernel; with *restart*, start a fresh one on the same connection info."""
        kernel = self.get(kernel_id)
        info = kernel.transport.info
        self._close([kernel])
        return self.create(info, kernel_id) if restart else None

    def interrupt(self, kernel_id):
        self.get(kernel_id).interrupt()

    def shutdown_all(self):
        if self._culler is not None:
            self._culler.kill()
        self._close(list(self.kernels.values()))
        if self._shells is not None:
            self._shells.close()

    def _spare_shells(self):
        """The host's :class:`~gkernel.shell.SpareShells`, once the first kernel has imported IPython."""
        if self._shells is None and f"{__package__}.shell" in sys.modules:
            from .shell import SpareShells
            self._shells = SpareShells(parent=self)
        return self._shells

    def describe(self, kernel):
        """What the management API lists about a kernel."""
        busy = kernel.dispatcher.shell_greenlet is not None
        return {
            "id": kernel.id,
            "state": "busy" if busy else "idle",
            "execution_count": kernel.shell.execution_count - 1 if kernel.shell is not None else 0,
            "last_activity": kernel.last_activity,
            "connections": kernel.publisher.subscriptions,
            "connection": self.connection_info(kernel),
        }

    @staticmethod
    def connection_info(kernel):
        info = dict(kernel.transport.info)
        info.setdefault("kernel_name", "gkernel")
        return info
