"""A cooperative version of jupyter_client's BlockingKernelClient.

BlockingKernelClient runs each waiting method in an asyncio loop (``run_sync``)
and its heartbeat in a thread. Greenlets of one thread cannot share such a loop:
a second greenlet calling in while the first waits finds it already running. So
:class:`GreenKernelClient` keeps jupyter_client's message builders and
connection handling and writes its waiting methods afresh on gevent primitives;
its channels are greenlets on ``zmq.green`` (see :mod:`.channels`).

One client belongs to the greenlets of one thread. Many clients may live in
one program; they share one ``zmq.green`` context, whose libzmq I/O thread is
the only OS thread involved.
"""

import getpass
import json
import sys
from time import monotonic

import gevent
import zmq.green
from gevent.event import Event
from gevent.socket import wait_read
from jupyter_client.blocking.client import wrapped
from jupyter_client.client import KernelClient, reqrep
from jupyter_client.connect import channel_socket_types
from traitlets import Instance, TraitError, Type, validate
from zmq.utils.monitor import recv_monitor_message

from .._limits import MAX_SOCKETS
from .channels import GreenHBChannel, GreenSocketChannel
from .errors import ConnectionFileError, KernelDiedError, KernelTimeoutError, RequestError

__all__ = ["GreenKernelClient"]

#: How often a wait without news asks whether the kernel still lives (seconds).
LIVENESS_INTERVAL = 0.5
#: How long wait_for_ready waits for IOPub to carry a kernel_info's status before asking again.
IOPUB_JOIN_WAIT = 0.5
#: The ports a connection file must name.
CHANNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def shared_context():
    """The zmq.green context of every green client and manager: one libzmq I/O thread for all.

    Its socket limit is raised (effective if no socket was made on it before);
    each client holds about six sockets and a dozen file descriptors.
    """
    context = zmq.green.Context.instance()
    context.max_sockets = max(context.max_sockets, MAX_SOCKETS)
    return context


class GreenKernelClient(KernelClient):
    """Talk to any Jupyter kernel from greenlets: BlockingKernelClient's API, no threads, no asyncio.

    Differences from BlockingKernelClient:

    - timeouts raise :class:`KernelTimeoutError` (a ``TimeoutError`` and a
      ``queue.Empty``), and ``wait_for_ready`` raises it too, where
      jupyter_client raises ``RuntimeError``;
    - a wait for a reply or output ends with :class:`KernelDiedError` as soon as
      the kernel is found dead (its process, if a manager started it, else its
      heartbeat), instead of running into the timeout;
    - ``wait_for_ready`` returns once IOPub has delivered the status of its own
      ``kernel_info`` request, without jupyter_client's 0.2 s quiet period;
    - the default stdin hook reads the terminal without blocking other
      greenlets (passwords excepted: ``getpass`` blocks);
    - ``execute_interactive`` never republishes output into an enclosing IPython kernel.
    """

    shell_channel_class = Type(GreenSocketChannel)
    iopub_channel_class = Type(GreenSocketChannel)
    stdin_channel_class = Type(GreenSocketChannel)
    control_channel_class = Type(GreenSocketChannel)
    hb_channel_class = Type(GreenHBChannel)

    #: Set while the stdin socket is connected to the kernel (ZMTP handshake done).
    _stdin_connected = Instance(Event, allow_none=True)

    def _context_default(self):
        return shared_context()

    @validate("context")
    def _green_context(self, proposal):
        if not isinstance(proposal.value, zmq.green.Context):
            raise TraitError("GreenKernelClient needs a zmq.green.Context: a native one would block the hub")
        return proposal.value

    def _create_connected_socket(self, channel, identity=None):
        """jupyter_client's version, plus a connection monitor: see :meth:`wait_for_ready`.

        Written here rather than wrapped because the monitor must be attached
        before ``connect``, which jupyter_client's version calls.
        """
        sock = self.context.socket(channel_socket_types[channel])
        sock.linger = 1000
        if identity:
            sock.identity = identity
        if self.curve_publickey is not None:
            sock.curve_secretkey = self.curve_secretkey
            sock.curve_publickey = self.curve_publickey
            sock.curve_serverkey = self.curve_publickey
        if channel == "stdin":  # the one channel on which the kernel speaks first
            self._stdin_connected = Event()
            events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | zmq.EVENT_MONITOR_STOPPED
            gevent.spawn(_track_connection, sock.get_monitor_socket(events), self._stdin_connected)
        sock.connect(self._make_url(channel))
        return sock

    def stop_channels(self):
        """Stop the channels that were made; unlike jupyter_client, never make one just to stop it."""
        for channel in (self._shell_channel, self._iopub_channel, self._stdin_channel,
                        self._hb_channel, self._control_channel):
            if channel is not None:
                channel.stop()

    def load_connection_file(self, connection_file=None):
        """Read a connection file, with one clear :class:`ConnectionFileError` for each way it can be wrong."""
        path = connection_file or self.connection_file
        try:
            with open(path) as f:
                info = json.load(f)
        except OSError as exc:
            raise ConnectionFileError(f"cannot read connection file {path}: {exc.strerror}") from exc
        except ValueError as exc:
            raise ConnectionFileError(f"connection file {path} is not JSON: {exc}") from exc
        if not isinstance(info, dict):
            raise ConnectionFileError(f"connection file {path} holds no JSON object")
        missing = [port for port in CHANNEL_PORTS if not isinstance(info.get(port), int)]
        if missing:
            raise ConnectionFileError(f"connection file {path} lacks {', '.join(missing)}")
        self.connection_file = path
        self.load_connection_info(info)

    # -- waiting for messages ------------------------------------------------

    def get_shell_msg(self, timeout=None):
        return self.shell_channel.get_msg(timeout)

    def get_iopub_msg(self, timeout=None):
        return self.iopub_channel.get_msg(timeout)

    def get_stdin_msg(self, timeout=None):
        return self.stdin_channel.get_msg(timeout)

    def get_control_msg(self, timeout=None):
        return self.control_channel.get_msg(timeout)

    def is_alive(self, watch_heartbeat=True):
        """Whether the kernel runs: asks the manager that started it, else the heartbeat, else says yes.

        ``watch_heartbeat=False`` trusts only a manager, for kernels still starting.
        """
        from .manager import GreenKernelManager

        if isinstance(self.parent, GreenKernelManager):
            return self.parent.is_alive()
        if watch_heartbeat and self._hb_channel is not None:
            return self._hb_channel.is_beating()
        return True

    def _next_msg(self, channels, deadline, waiting_for, watch_heartbeat=True):
        """The next message of the first of ``channels`` to have one, as ``(channel, msg)``.

        Raises KernelTimeoutError at ``deadline`` (monotonic, or None) and
        KernelDiedError once the kernel is found dead (see :meth:`is_alive`).
        """
        while True:
            for channel in channels:
                if channel.msg_ready():
                    return channel, channel.get_msg(0)
            now = monotonic()
            if deadline is not None and now >= deadline:
                raise KernelTimeoutError(f"timed out waiting for {waiting_for}")
            wait = LIVENESS_INTERVAL if deadline is None else min(LIVENESS_INTERVAL, deadline - now)
            if gevent.wait([channel.readable for channel in channels], timeout=wait, count=1):
                continue
            if not self.is_alive(watch_heartbeat):
                raise KernelDiedError(f"the kernel died while waiting for {waiting_for}")

    def _recv_reply(self, msg_id, timeout=None, channel="shell", watch_heartbeat=True):
        """The reply to ``msg_id``; replies to other requests are dropped, as jupyter_client does."""
        deadline = None if timeout is None else monotonic() + timeout
        replies = self.control_channel if channel == "control" else self.shell_channel
        while True:
            _, reply = self._next_msg([replies], deadline, f"the reply to {msg_id}", watch_heartbeat)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    # replies come on the shell channel, as in BlockingKernelClient (execute: below)
    history = reqrep(wrapped, KernelClient.history)
    complete = reqrep(wrapped, KernelClient.complete)
    inspect = reqrep(wrapped, KernelClient.inspect)
    kernel_info = reqrep(wrapped, KernelClient.kernel_info)
    comm_info = reqrep(wrapped, KernelClient.comm_info)
    is_complete = reqrep(wrapped, KernelClient.is_complete)
    # ... and on the control channel
    shutdown = reqrep(wrapped, KernelClient.shutdown, channel="control")

    def wait_for_ready(self, timeout=None):
        """Return once the kernel answers kernel_info on shell and IOPub delivers; drop what IOPub held before.

        A SUB socket misses what is published before its subscription reaches
        the kernel, so the request is repeated until IOPub carries the idle
        status of one: at once when the kernel welcomes the subscription
        (``iopub_welcome``, JEP 65), else after a short wait. And the kernel's
        stdin ROUTER drops an input_request for a client not connected yet, so
        this also waits for the stdin socket, which retries its connection on
        its own schedule (at start and after a restart).
        """
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            msg_id = self.kernel_info()
            try:
                remaining = None if deadline is None else max(0.0, deadline - monotonic())
                reply = self._recv_reply(msg_id, remaining, watch_heartbeat=False)
            except KernelTimeoutError:
                raise KernelTimeoutError(f"the kernel did not answer kernel_info within {timeout} s") from None
            if self._idle_within(msg_id, IOPUB_JOIN_WAIT):
                break
        self._handle_kernel_info_reply(reply)
        remaining = None if deadline is None else max(0.0, deadline - monotonic())
        if self._stdin_connected is not None and not self._stdin_connected.wait(remaining):
            raise KernelTimeoutError(f"the stdin channel did not connect within {timeout} s")

    def _idle_within(self, msg_id, seconds):
        """Whether IOPub carries the idle status of ``msg_id`` within ``seconds``; drops what comes before it.

        An ``iopub_welcome`` first means the subscription just arrived, after that status was published.
        """
        deadline = monotonic() + seconds
        try:
            while True:
                _, msg = self._next_msg([self.iopub_channel], deadline, "IOPub", watch_heartbeat=False)
                if _is_idle_of(msg, msg_id):
                    return True
                if msg["msg_type"] == "iopub_welcome":
                    return False
        except KernelTimeoutError:
            return False

    def execute(self, *args, subshell_id=None, reply=False, timeout=None, **kwargs):
        """jupyter_client's ``execute`` (``reply=True`` waits for the reply); with *subshell_id*, in that
        kernel subshell (see :meth:`create_subshell`)."""
        with self.shell_channel.extra_header(**({} if subshell_id is None else {"subshell_id": subshell_id})):
            msg_id = KernelClient.execute(self, *args, **kwargs)
        return self._recv_reply(msg_id, timeout) if reply else msg_id

    def create_subshell(self, timeout=None):
        """A new kernel subshell (JEP 91): its requests run beside the main shell's. Returns its id."""
        return self._control_request("create_subshell_request", {}, timeout)["subshell_id"]

    def delete_subshell(self, subshell_id, timeout=None):
        self._control_request("delete_subshell_request", {"subshell_id": subshell_id}, timeout)

    def list_subshells(self, timeout=None):
        return self._control_request("list_subshell_request", {}, timeout)["subshell_id"]

    def _control_request(self, msg_type, content, timeout):
        """The content of the reply to a control request; raises :class:`RequestError` on an error reply."""
        msg = self.session.msg(msg_type, content)
        self.control_channel.send(msg)
        reply = self._recv_reply(msg["header"]["msg_id"], timeout, channel="control")["content"]
        if reply.get("status") != "ok":
            raise RequestError(reply)
        return reply

    def execute_interactive(
        self,
        code,
        silent=False,
        store_history=True,
        user_expressions=None,
        allow_stdin=None,
        stop_on_error=True,
        timeout=None,
        output_hook=None,
        stdin_hook=None,
        subshell_id=None,
    ):
        """Execute ``code``, pass its output to ``output_hook`` and input requests to ``stdin_hook``; return the reply.

        ``timeout`` covers output and reply together. See :meth:`follow`.
        """
        if allow_stdin is None:
            allow_stdin = self.allow_stdin
        msg_id = self.execute(
            code,
            silent=silent,
            store_history=store_history,
            user_expressions=user_expressions,
            allow_stdin=allow_stdin,
            stop_on_error=stop_on_error,
            subshell_id=subshell_id,
        )
        return self.follow(msg_id, timeout, output_hook, stdin_hook, allow_stdin)

    def follow(self, msg_id, timeout=None, output_hook=None, stdin_hook=None, allow_stdin=None):
        """Pass the IOPub output of request ``msg_id`` to ``output_hook`` until its idle status; return its reply.

        The second half of :meth:`execute_interactive`, for a request already
        sent (not in jupyter_client): after a :class:`KernelTimeoutError`, call
        it again to go on where it stopped, say after an interrupt. The hooks run
        in the calling greenlet, input requests first, as in jupyter_client.
        Output of other requests is dropped.
        """
        if allow_stdin is None:
            allow_stdin = self.allow_stdin
        output_hook = output_hook or self._output_hook_default
        stdin_hook = stdin_hook or self._stdin_hook_default
        deadline = None if timeout is None else monotonic() + timeout
        channels = [self.stdin_channel, self.iopub_channel] if allow_stdin else [self.iopub_channel]
        while True:
            channel, msg = self._next_msg(channels, deadline, f"the output of {msg_id}")
            if channel is self.stdin_channel:
                stdin_hook(msg)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            output_hook(msg)
            if _is_idle_of(msg, msg_id):
                break
        return self._recv_reply(msg_id, None if deadline is None else max(0.0, deadline - monotonic()))

    def _stdin_hook_default(self, msg):
        """Ask the terminal, waiting for the line cooperatively; answer unless the request went stale."""
        content = msg["content"]
        try:
            if content.get("password"):
                value = getpass.getpass(content["prompt"])
            else:
                value = _read_line(content["prompt"])
        except EOFError:
            value = "\x04"
        if not (self.stdin_channel.msg_ready() or self.shell_channel.msg_ready()):
            self.input(value)


def _track_connection(monitor, connected):
    """Keep ``connected`` set while the monitored socket has a peer, until the socket closes."""
    while True:
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            connected.set()
        elif event == zmq.EVENT_DISCONNECTED:
            connected.clear()
        else:  # EVENT_MONITOR_STOPPED: the socket closed
            monitor.close(linger=0)
            return


def _is_idle_of(msg, msg_id):
    return (
        msg["msg_type"] == "status"
        and msg["content"].get("execution_state") == "idle"
        and msg["parent_header"].get("msg_id") == msg_id
    )


def _read_line(prompt):
    """``input(prompt)``, except that other greenlets run while the user types."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    try:
        wait_read(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # no real fd (captured or replaced stdin): plain input()
        return input()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")
