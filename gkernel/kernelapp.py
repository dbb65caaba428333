"""``python -m gkernel`` / ``gkernel kernel``: host one kernel in this process.

Order matters here. ``gevent.monkey.patch_all()`` must run before anything
imports ``ssl`` or starts a thread, and jupyter_client imports ``ssl``; so
this module imports only traitlets, jupyter_core's paths and gkernel's own
config classes at the top, loads the configuration, binds the channels (so
clients can connect while the rest starts), patches, and only then imports
jupyter_client for the Session and the connection file.

Then it replaces ``sys.stdout``/``sys.stderr`` with
routers to the kernel, captures file descriptors 1 and 2, installs the fork
relay and the SIGINT and SIGTERM handlers, serves until a shutdown request,
restores the streams and fds, and exits 0.
"""

import json
import os
import signal
import time

from jupyter_core.paths import jupyter_config_path, jupyter_runtime_dir
from traitlets import Bool, CaselessStrEnum, Integer, Unicode
from traitlets.config import Application

from . import __version__
from .kernel import Kernel
from .patching import patch_process
from .process import ProcessRuntime, serve_until

__all__ = ["GKernelApp", "launch"]


class ShellConfigHelp:
    """The help also knows the IPython shell's options (``--profile`` is one), imported only then.

    IPython is not imported before ``gevent.monkey.patch_all()`` (it creates
    locks at import time); the help exits before anything is patched. Both
    ``--help`` (whose aliases name the shell's classes) and ``--help-all``
    (which lists their options) need them.
    """

    def emit_help(self, classes=False):
        from IPython.core.completer import IPCompleter
        from IPython.core.history import HistoryManager

        from .shell import GreenShell, ShellStartup
        self.classes = [*self.classes, GreenShell, ShellStartup, HistoryManager, IPCompleter]
        yield from super().emit_help(classes)


class GKernelApp(ShellConfigHelp, Application):
    name = "gkernel-kernel"
    version = __version__
    description = """Start one gkernel kernel, a Jupyter kernel for Python that runs on gevent.

    Given a connection file (-f), the kernel binds the ports it names; a file
    that does not exist yet is written with free ports. Without -f, the kernel
    writes its own connection file (mode 0600, random key) to the Jupyter
    runtime directory and logs how to attach to it.

    Before any user code runs, gevent.monkey.patch_all() makes the standard
    library cooperative; --no-monkey-patch leaves it alone.
    """
    examples = """
    python -m gkernel -f /path/to/kernel-1234.json
    gkernel kernel --no-monkey-patch --IPCompleter.use_jedi=False
    gkernel kernel --InteractiveShell.xmode=Minimal --HistoryManager.enabled=False
    """
    classes = [Kernel]

    connection_file = Unicode(
        "", help="JSON connection file to use; written with free ports and a new key if missing."
    ).tag(config=True)
    ip = Unicode("127.0.0.1", help="Address to bind when the connection file does not name one.").tag(config=True)
    transport = CaselessStrEnum(["tcp", "ipc"], "tcp", help="ZeroMQ transport for a new connection file.").tag(config=True)
    encrypt = Bool(
        False, help="Encrypt the channels with CurveZMQ when this kernel writes its own connection file "
                    "(a new key pair goes into it). A connection file given with -f that holds a key "
                    "pair (jupyter_client's transport_encryption) is always encrypted."
    ).tag(config=True)
    monkey_patch = Bool(
        True, help="Call gevent.monkey.patch_all() before user code runs, so blocking "
                   "standard-library calls in cells yield to other greenlets."
    ).tag(config=True)
    isatty = Bool(
        False, help="What sys.stdout.isatty() and sys.stderr.isatty() answer in cells; True makes "
                    "libraries write terminal colours and progress bars."
    ).tag(config=True)
    echo = Bool(False, help="Also copy cell output to the kernel process's own stdout/stderr.").tag(config=True)
    capture_fd = Bool(
        True, help="Capture file descriptors 1 and 2, so output of os.write, subprocesses and C "
                   "code reaches the cells. Off, such output goes to the kernel process's own "
                   "stdout/stderr."
    ).tag(config=True)
    iopub_hwm = Integer(
        1000, help="IOPub send high-water mark: messages zmq keeps for a subscriber that does not "
                   "read; beyond it that subscriber misses messages (the kernel never waits). "
                   "0 means no limit."
    ).tag(config=True)
    config_file_name = Unicode("gkernel_config", help="Base name of config files searched in Jupyter's config path.")

    aliases = {
        "f": "GKernelApp.connection_file",
        "ip": "GKernelApp.ip",
        "transport": "GKernelApp.transport",
        "log-level": "Application.log_level",
        "profile": "GreenShell.profile_name",
        "profile-dir": "GreenShell.profile_location",
    }
    flags = {
        "no-monkey-patch": ({"GKernelApp": {"monkey_patch": False}}, "Do not call gevent.monkey.patch_all()."),
        "no-capture-fd": ({"GKernelApp": {"capture_fd": False}}, "Leave file descriptors 1 and 2 alone."),
        "encrypt": ({"GKernelApp": {"encrypt": True}}, "CurveZMQ-encrypt a connection file the kernel writes."),
        "debug": ({"Application": {"log_level": 10}}, "Log at DEBUG level."),
    }

    def initialize(self, argv=None):
        self.parse_command_line(argv)
        load_jupyter_config(self)
        self._bind()
        if self.monkey_patch:
            patch_process()

    def _bind(self):
        import zmq

        from .heartbeat import Heartbeat
        from .transport import PLAINTEXT_WARNING, Transport

        self._info, self._own_file = self._connection_info()
        self._context = zmq.Context()
        self._heartbeat = Heartbeat(self._context)
        try:
            self._transport = Transport(self._context, self._info, self._heartbeat, iopub_hwm=self.iopub_hwm)
        except zmq.ZMQError as exc:
            self.log.critical("cannot bind the kernel's ports on %s: %s", self._info.get("ip"), exc)
            self.exit(1)
        except ValueError as exc:  # a CurveZMQ key pair that cannot be used
            self.log.critical("%s", exc)
            self.exit(1)
        if self._transport.curve is None and self._info["transport"] == "tcp":
            self.log.warning("%s, or give --encrypt to a kernel that writes its own connection file", PLAINTEXT_WARNING)

    def start(self):
        from .session import VerifyingSession as Session

        info, own_file, context, transport = self._info, self._own_file, self._context, self._transport
        session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"],
                          username="kernel", parent=self)
        transport.green()
        kernel = None
        process = ProcessRuntime(lambda: [kernel], self.log, capture_fd=self.capture_fd,
                                 isatty=self.isatty, echo=self.echo)
        kernel = Kernel(session, transport, clients_may_reconnect=self._restarted(own_file),
                        debug_server=process.debug_server, parent=self)
        process.start()
        kernel.captures = list(process.captures.values())
        signal.signal(signal.SIGINT, self._on_sigint(kernel))
        import gevent
        gevent.signal_handler(signal.SIGTERM, kernel.shutdown_event.set)
        if own_file or not os.path.exists(self.connection_file):
            # Written only now: a client may signal the kernel as soon as the file exists.
            self._write_connection_file(info)

        self._heartbeat.start()
        kernel.start()
        self._watch_parent(kernel)
        self.log.info("gkernel %s serving %s", __version__, self.connection_file)
        if own_file and transport.curve is not None:
            # jupyter_client's console app (8.10) builds its client from the file's ports and key
            # only: it would talk plaintext to an encrypted kernel, and wait forever.
            self.log.warning("To connect a client: BlockingKernelClient().load_connection_file(%r) "
                             "(CurveZMQ: `jupyter console --existing` does not pass the file's keys yet)",
                             self.connection_file)
        elif own_file:
            self.log.warning("To connect a client: jupyter console --existing %s", self.connection_file)
        try:
            serve_until(kernel.shutdown_event, self.log)
        finally:
            kernel.close()
            self._heartbeat.stop()
            process.stop()
            context.destroy(linger=0)
            if own_file:
                self._remove_connection_file()

    def _watch_parent(self, kernel):
        """End the kernel when the process that launched it is gone.

        jupyter_client's launcher names itself in ``JPY_PARENT_PID``; a client
        killed without shutting its kernel down would otherwise leave it running
        forever. Once reparented, ``os.getppid()`` no longer answers that pid.
        """
        import gevent

        try:
            parent = int(os.environ.get("JPY_PARENT_PID", ""))
        except ValueError:
            return

        kernel_pid = os.getpid()

        def watch():
            while os.getppid() == parent:
                gevent.sleep(1)
            if os.getpid() != kernel_pid:
                return  # in a cell's forked child, whose parent is the kernel: not ours to end
            self.log.warning("the process that launched this kernel (pid %d) is gone; shutting down", parent)
            kernel.shutdown_event.set()

        if os.getppid() == parent:
            gevent.spawn(watch)

    @staticmethod
    def _on_sigint(kernel):
        """SIGINT raises KeyboardInterrupt in the running cell (see DESIGN: signals)."""
        from gevent import getcurrent

        def on_sigint(signum, frame):
            glet = kernel.dispatcher.shell_greenlet
            if glet is None:
                return  # idle: nothing to interrupt
            if glet is getcurrent():
                raise KeyboardInterrupt
            kernel.interrupt()
        return on_sigint

    def _restarted(self, own_file):
        """Whether clients may be connected to our ports from before: the connection file is older
        than this process (jupyter_client keeps it when it restarts a kernel)."""
        if own_file:
            return False
        from ._trust import start_ticks

        try:
            written = os.path.getmtime(self.connection_file)
        except OSError:
            return True  # cannot tell: wait the little it costs
        started_ticks = start_ticks()
        if started_ticks is None:
            return True
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
        return written < time.time() - age - 0.5

    def _connection_info(self):
        """Connection info to bind, and whether this kernel chose the file name."""
        own_file = not self.connection_file
        if own_file:
            runtime = jupyter_runtime_dir()
            os.makedirs(runtime, mode=0o700, exist_ok=True)
            self.connection_file = os.path.join(runtime, f"kernel-{os.getpid()}.json")
        elif os.path.exists(self.connection_file):
            try:
                with open(self.connection_file) as f:
                    info = json.load(f)
                info.setdefault("transport", "tcp")
                info.setdefault("signature_scheme", "hmac-sha256")
                return info, False
            except (OSError, ValueError) as exc:
                self.log.critical("cannot read connection file %s: %s", self.connection_file, exc)
                self.exit(1)
        import uuid
        info = {"transport": self.transport, "ip": self.ip, "key": str(uuid.uuid4()),
                "signature_scheme": "hmac-sha256"}
        if self.encrypt:
            from .transport import new_curve_keys

            try:
                info.update(new_curve_keys())
            except ValueError as exc:
                self.log.critical("--encrypt: %s", exc)
                self.exit(1)
        return info, own_file

    def _write_connection_file(self, info):
        from jupyter_client.connect import write_connection_file

        ports = {k: v for k, v in info.items() if k.endswith("_port")}
        curve = {k: info[k].encode() for k in ("curve_publickey", "curve_secretkey") if info.get(k)}
        write_connection_file(self.connection_file, ip=info["ip"], key=info["key"].encode(),
                              transport=info["transport"], signature_scheme=info["signature_scheme"],
                              kernel_name="gkernel", **ports, **curve)

    def _remove_connection_file(self):
        try:
            os.remove(self.connection_file)
        except OSError:
            pass


def load_jupyter_config(app):
    """Load the configuration: the command line keeps priority over ``app.config_file_name`` on
    Jupyter's config path, which keeps it over the IPython profile's ``ipython_config.py`` and
    ``ipython_kernel_config.py`` (read as ipykernel reads them: shell options, exec_lines, ...).

    Also creates the app's log handler, on the real stderr, before cells' streams replace it.
    """
    for name in ("ipython_config", "ipython_kernel_config"):
        app.load_config_file(name, path=ipython_profile_dir(app.config))
    for path in reversed(jupyter_config_path()):
        app.load_config_file(app.config_file_name, path=path)
    app.log


def ipython_profile_dir(config):
    """The IPython profile directory the kernels' shells will use (see GreenShell's profile options).

    Worked out without importing IPython, which must wait until after monkey-patching.
    """
    options = config.get("GreenShell", {})
    if options.get("profile_location"):
        return os.path.expanduser(str(options["profile_location"]))
    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
    return os.path.join(ipython_dir, f"profile_{options.get('profile_name', 'default')}")


def launch(argv=None):
    """Entry point of ``python -m gkernel``."""
    app = GKernelApp.instance()
    app.initialize(argv)
    app.start()
