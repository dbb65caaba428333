"""``gkernel serve``: host many kernels in one process; ``gkernel serve stop`` ends a host.

The host binds its management API on loopback, writes its host file (mode
0600: address, secret, pid) to the Jupyter runtime directory, and serves
until ``stop`` or SIGTERM, which end every kernel cleanly and remove the
host file. Like ``python -m gkernel`` it patches before importing
jupyter_client (see :mod:`gkernel.kernelapp`).
"""

import json
import os
import signal
import uuid

from jupyter_core.paths import jupyter_runtime_dir
from traitlets import Bool, Unicode
from traitlets.config import Application

from . import __version__
from ._limits import raise_limits
from .host import KernelHost
from .kernel import Kernel
from .kernelapp import ShellConfigHelp, load_jupyter_config
from .patching import patch_process

__all__ = ["ServeApp", "StopApp"]


class StopApp(Application):
    name = "gkernel-serve-stop"
    version = __version__
    description = "Stop a running gkernel serve host and all its kernels."
    host_file = Unicode("", help="Host file of the host to stop (default: the newest running host).").tag(config=True)
    aliases = {"host-file": "StopApp.host_file"}

    def start(self):
        from .manage import HostClient, HostError

        try:
            client = HostClient(self.host_file or None)
            client.stop()
        except HostError as exc:
            self.log.critical("%s", exc)
            self.exit(1)
        print(f"stopped the host of {client.host_file}")


class ServeApp(ShellConfigHelp, Application):
    name = "gkernel-serve"
    version = __version__
    description = """Host many gkernel kernels in one process.

    Kernels are created through the management API (see the README): each has
    its own ports, key, namespace and history, and ordinary Jupyter clients
    connect to it with its connection info. The API's address and secret are
    in the host file (mode 0600) in the Jupyter runtime directory.
    """
    examples = """
    gkernel serve --max-kernels=500
    gkernel serve --shutdown-no-kernels-timeout=600   # end 10 minutes after the last kernel
    gkernel serve stop
    """
    classes = [KernelHost, Kernel]
    subcommands = {"stop": (StopApp, StopApp.description)}

    host_file = Unicode("", help="Where to write the host file (default: the runtime directory).").tag(config=True)
    monkey_patch = Bool(True, help="Call gevent.monkey.patch_all() before user code runs.").tag(config=True)
    capture_fd = Bool(
        False, help="Capture file descriptors 1 and 2. A process has one fd 1, so fd-level output of "
                    "one kernel could then reach another (it goes to the kernel whose cell collects it); "
                    "off, it goes to the host's own stdout/stderr."
    ).tag(config=True)
    config_file_name = Unicode("gkernel_config", help="Base name of config files searched in Jupyter's config path.")

    aliases = {
        "ip": "KernelHost.ip",
        "profile": "GreenShell.profile_name",
        "profile-dir": "GreenShell.profile_location",
        "transport": "KernelHost.transport",
        "max-kernels": "KernelHost.max_kernels",
        "cull-idle-timeout": "KernelHost.cull_idle_timeout",
        "shutdown-no-kernels-timeout": "KernelHost.shutdown_no_kernels_timeout",
        "host-file": "ServeApp.host_file",
        "log-level": "Application.log_level",
    }
    flags = {
        "no-monkey-patch": ({"ServeApp": {"monkey_patch": False}}, "Do not call gevent.monkey.patch_all()."),
        "capture-fd": ({"ServeApp": {"capture_fd": True}}, "Capture fds 1 and 2 (not isolated between kernels)."),
        "debug": ({"Application": {"log_level": 10}}, "Log at DEBUG level."),
    }

    def initialize(self, argv=None):
        self.parse_command_line(argv)
        if self.subapp is not None:
            return
        load_jupyter_config(self)
        if self.monkey_patch:
            patch_process()

    def start(self):
        if self.subapp is not None:
            return self.subapp.start()
        import gevent
        import zmq
        from gevent.event import Event
        from .session import VerifyingSession as Session

        from .heartbeat import Heartbeat
        from .manage import ManagementServer
        from .process import ProcessRuntime, serve_until

        host_file = self._host_file_path()
        context = zmq.Context()
        raise_limits(context, self.log)
        stop = Event()
        host = None
        process = ProcessRuntime(lambda: list(host.kernels.values()), self.log, capture_fd=self.capture_fd)
        heartbeat = Heartbeat(context)
        heartbeat.start()
        host = KernelHost(context, process, heartbeat, parent=self)
        process.start()
        secret = uuid.uuid4().hex
        session = Session(key=secret.encode(), username="gkernel-serve", parent=self)
        import zmq.green

        from .transport import curve_keys, new_curve_keys

        socket = zmq.green.Context.shadow(context.underlying).socket(zmq.ROUTER)
        socket.linger = 500
        curve = {}
        if zmq.has("curve"):
            # The API is encrypted as the kernels can be: its key pair is in the host file (0600),
            # with the HMAC key, and clients use it as jupyter_client uses a kernel's.
            curve = new_curve_keys()
            socket.curve_publickey, socket.curve_secretkey = curve_keys(curve)
            socket.curve_server = True
        port = socket.bind_to_random_port("tcp://127.0.0.1")
        server = ManagementServer(host, session, socket, self.log, stop.set)
        server.start()
        gevent.signal_handler(signal.SIGTERM, stop.set)
        host.deserted.rawlink(lambda _: stop.set())
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # interrupts go to kernels through their clients
        path = self._write_host_file(host_file, {"pid": os.getpid(), "ip": "127.0.0.1", "port": port, "key": secret,
                                      "signature_scheme": "hmac-sha256", "version": __version__, **curve})
        self.log.warning("gkernel serve %s: host file %s", __version__, path)
        try:
            serve_until(stop, self.log)
        finally:
            os.remove(path)  # first: no provisioner may pick a host that is ending
            server.close()
            host.shutdown_all()
            heartbeat.stop()
            process.stop()
            context.destroy(linger=0)

    def _host_file_path(self):
        """Where the host file goes: a directory only we can write to (else a one-line error)."""
        from ._trust import PrivacyError, private_directory

        path = os.path.abspath(self.host_file or os.path.join(jupyter_runtime_dir(),
                                                              f"gkernel-serve-{os.getpid()}.json"))
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            private_directory(os.path.dirname(path))
        except (OSError, PrivacyError) as exc:
            self.log.critical("cannot write a host file there: %s", exc)
            self.exit(1)
        return path

    @staticmethod
    def _write_host_file(path, info):
        """Write the host file (0600), whole or not at all.

        It names this process by pid and start time, so that a client never
        takes a later process with the same pid (or a zombie) for this host.
        """
        from ._trust import start_ticks

        partial = f"{path}.{os.getpid()}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({**info, "started": start_ticks()}, f)
        os.replace(partial, path)  # a reader sees no file or the whole file
        return path

