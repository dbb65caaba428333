"""One Jupyter kernel: the protocol core over a bound :class:`~gkernel.transport.Transport`.

Owns, per kernel: the channel reader greenlets, the dispatcher, the IOPub
publisher, the output streams and the IPython shell (:mod:`gkernel.shell`).
The heartbeat is the process's (:mod:`gkernel.heartbeat`). Nothing per-kernel lives in module globals, so a process may host
many kernels; the host (``gkernel.kernelapp`` for one kernel per process)
creates the transport and the Session, starts the kernel and waits on
:attr:`Kernel.shutdown_event`.

Life of a request: a reader greenlet receives the frames, the Session checks
the HMAC signature and parses them, the dispatcher queues the request by
priority, and :meth:`Kernel._serve` publishes ``busy``, runs the handler from
the table below, flushes output, sends the reply and publishes ``idle``.
A handler receives its content fields as keyword arguments, already checked
against the fields it declared (:mod:`gkernel.messages`).
"""

import contextvars
import datetime
import functools
import os
import platform
import sys
import time
import traceback
import uuid

import gevent
import zmq
from gevent import getcurrent
from gevent.event import Event
from traitlets import Bool, Float
from traitlets.config import LoggingConfigurable

from . import __version__
from ._threads import hub_thread_check, import_in_thread
from .cells import CELL_VAR, Cell, cell_greenlets, current_cell, spawn_in_cell
from .comms import KernelCommManager
from .debugger import Debugger
from .dispatcher import COMM, CONTROL, SHELL, Dispatcher, settle
from .iopub import IOPubPublisher, QueueSocket
from .messages import PROTOCOL_VERSION, InvalidRequest, UnknownSubshellError, field, parse_content
from .outstream import KernelOutput
from .session import DropLog
from .stdin import StdinChannel, install_patches, remove_patches
from .usage import UsageMeter

__all__ = ["Kernel"]


#: zmq's reconnect interval (100 ms plus up to 100 ms of jitter) and a margin: clients of a
#: restarted kernel are back by then
_RECONNECT_WINDOW = 0.25

#: messages from the front end to comms: served in a lane of their own (see gkernel.dispatcher)
COMM_MESSAGES = frozenset({"comm_open", "comm_msg", "comm_close"})

#: msg_type -> (method name, declared content fields, whether it needs the IPython shell)
_HANDLERS = {}


def handles(msg_type, needs_shell=False, **fields):
    """Register the decorated method as the handler of *msg_type*.

    A handler that *needs_shell* waits until the kernel's IPython shell is
    built (see :meth:`Kernel.start`); the others answer at once.
    """
    def register(method):
        _HANDLERS[msg_type] = (method.__name__, fields, needs_shell)
        return method
    return register


class Request:
    """One received, authenticated request and what to do once it is answered."""

    __slots__ = ("channel", "idents", "msg", "error", "after_reply", "reply_metadata")

    def __init__(self, channel, idents, msg, error=None):
        self.channel = channel
        self.idents = idents
        self.msg = msg
        #: the InvalidRequest to answer with instead of serving it, if any
        self.error = error
        self.after_reply = None
        #: the reply's metadata
        self.reply_metadata = {}

    @property
    def msg_type(self):
        return self.msg["header"]["msg_type"]


class Kernel(LoggingConfigurable):
    """A Jupyter kernel for Python, served by greenlets of the current hub."""

    stream_flush_interval = Float(
        0.05, help="Seconds output may wait in a stream buffer before it is published."
    ).tag(config=True)
    iopub_subscriber_wait = Float(
        1.0, help="Seconds the first request of a kernel waits for a client to subscribe to IOPub, so that "
                  "none of its output is published to nobody (a client reconnecting after a restart)."
    ).tag(config=True)
    time_slicing = Bool(
        True, help="Let other greenlets and kernels run while a cell's code spins the CPU, by yielding to "
                   "the hub every 20 ms of CPU it holds (only in user code; see gkernel.cpuwatch). Off, a "
                   "spinning cell still shows its output and can be interrupted, but nothing else runs."
    ).tag(config=True)

    def __init__(self, session, transport, kernel_id=None, spare_shells=None, clients_may_reconnect=False,
                 debug_server=None, **kwargs):
        super().__init__(**kwargs)
        self.id = kernel_id or str(uuid.uuid4())
        self.session = session
        self.transport = transport
        self.publisher = IOPubPublisher(session, transport.iopub, self.log)
        self.output = KernelOutput(self.publisher, self.stream_flush_interval)
        #: for code written for ipykernel: ``kernel.session.send(kernel.iopub_socket, ...)``
        self.iopub_socket = QueueSocket(self.publisher, self.flush_output)
        #: fd-level captures (:mod:`gkernel.fdcapture`) the host attached; read before each flush
        self.captures = []
        self.stdin = StdinChannel(session, transport.stdin, self.log)
        #: the IPython shell (:class:`gkernel.shell.GreenShell`), built soon after :meth:`start`
        self.shell = None
        #: a host's :class:`gkernel.shell.SpareShells`, if it keeps shells ready
        self.spare_shells = spare_shells
        self._shell_built = Event()
        self._shell_builder = None
        #: the context variables of the kernel's requests: each runs in a greenlet of its
        #: own, and a variable (or ``decimal``'s context) set in one cell is still set in the
        #: next, as at the IPython prompt
        self.user_context = contextvars.Context()
        self.dispatcher = Dispatcher(self._serve, self._spawn_request, self.log)
        #: the kernel's comms (:mod:`gkernel.comms`)
        self.comm_manager = KernelCommManager(self)
        self.usage = UsageMeter()
        #: the kernel's session of the process's debugger (:mod:`gkernel.debugger`)
        self.debugger = Debugger(self, debug_server)
        #: the most recent non-silent execute_request: owner of output from outside any cell
        self.last_parent = None
        #: when it started (monotonic): which kernel of a host ran a cell last is ours to say,
        #: not the clients' (their header dates come from other clocks, or are not dates at all)
        self.last_parent_at = 0.0
        #: the request last served on each channel (see get_parent)
        self._channel_parents = {"shell": None, "control": None}
        #: when the kernel last started or finished serving a request (epoch seconds)
        self.last_activity = time.time()
        #: set once a shutdown_request has been answered; the host then calls close()
        self.shutdown_event = Event()
        #: per lane (SHELL or a subshell id), after a failed cell with stop_on_error: execute
        #: requests of that lane sent before this moment are aborted
        self._abort_sent_before = {}
        #: subshell id -> the context variables of its requests
        self._subshell_contexts = {}
        #: whether the first request waited for IOPub subscribers (see _let_subscribers_in)
        self._subscribers_in = False
        #: whether clients of a former kernel on these ports (a restart) may be reconnecting
        self._clients_may_reconnect = clients_may_reconnect
        self._readers = []
        #: the log of dropped messages, rate-limited: a flood of garbage is not a flood of log lines
        self._drops = DropLog(self.log)
        self._forked = False
        self._taking_in_control = False
        self._interrupt_current = False
        #: keep_kernel of an exit() called during the current execute_request, if any
        self._exit_requested = None
        self._in_hub_thread = hub_thread_check()

    # -- life cycle ----------------------------------------------------------

    def start(self):
        """Serve; the IPython shell is built by a greenlet of its own right after.

        Importing IPython and building a shell take longer than the rest of a
        kernel's start, and a client's first request is a kernel_info_request,
        which needs no shell: requests already waiting are taken in first, the
        import runs in a thread of its own while the hub answers, and requests
        that need the shell wait for it.
        """
        self.publisher.start()
        self.stdin.start()
        install_patches(self)
        self.dispatcher.start()
        for channel, priority in (("shell", SHELL), ("control", CONTROL)):
            self._readers.append(gevent.spawn(self._read, channel, priority))
        # Clients may have subscribed while we started: welcome them first.
        settle()
        self.publisher.publish("status", {"execution_state": "starting"})
        self._shell_builder = gevent.spawn(self._build_shell)

    def _build_shell(self):
        if f"{__package__}.shell" not in sys.modules:  # the first kernel of the process
            import_in_thread(f"{__package__}.shell")
        from .shell import GreenShell, ShellStartup

        try:
            if self.spare_shells is not None:
                self.shell = self.spare_shells.take(self)
            else:
                self.shell = GreenShell(kernel=self, parent=self)
            ShellStartup(self.shell, parent=self).run()
        except Exception:
            self.log.exception("the IPython shell could not be built; cells cannot run")
        finally:
            self._shell_built.set()

    def close(self):
        """Stop serving, end the greenlets the cells spawned, deliver what is queued, close the sockets."""
        self.stop_serving()
        gevent.killall(cell_greenlets([self]), timeout=1)
        self.release()

    def stop_serving(self):
        """First half of :meth:`close`: take no more requests."""
        # Before the cells' greenlets are killed: one killed while stopped at a breakpoint would
        # leave pydevd believing its thread stopped, and a later greenlet reusing its id would stop.
        self.debugger.close()
        # Readers go first: no greenlet may wait on a socket being closed.
        gevent.killall(self._readers, timeout=1)
        if self._shell_builder is not None:
            self._shell_builder.kill()  # startup files may still be running
        self.stdin.stop()
        self.dispatcher.stop()

    def release(self):
        """Second half of :meth:`close`, once the cells' greenlets are gone: flush, then close everything."""
        remove_patches(self)
        self.flush_output()
        self.publisher.flush(timeout=2.0)
        self.publisher.stop()
        self.transport.close()
        if self.shell is not None:
            self.shell.close()

    def flush_output(self):
        """Publish everything written so far: C stdio and fd-level output, then the stream buffer."""
        if not self._in_hub_thread():
            self.output.flush()  # hands itself over to the hub thread
            return
        if self.captures:
            from .fdcapture import flush_c_stdio
            flush_c_stdio()
            for capture in self.captures:  # (with a write signal the first poll reads both files)
                capture.poll_if_written((self, self.last_parent))
        self.output.flush()

    def publish_output_now(self):
        """Publish what was written so far from the calling greenlet, which holds the CPU
        (see :mod:`gkernel.cpuwatch`): the hub's flush timers and publisher cannot run."""
        self.flush_output()
        self.publisher.send_queued_now()

    def enter_forked_child(self, publisher):
        """In a forked child (see :mod:`gkernel.forks`): leave the parent's sockets alone.

        Stops the socket watchers and the serving greenlets, drops inherited
        unsent output and publishes through *publisher* (the relay pipe) from
        now on. The forking cell goes on; when it returns, the child exits.
        """
        self._forked = True
        self.transport.forget()
        gevent.killall([*self._readers, *self.publisher.greenlets, self.dispatcher.greenlet], block=False)
        for capture in self.captures:
            capture.forget()
        self.captures = []
        if self.shell is not None:
            self.shell.history_manager.forget()
        self.publisher = publisher
        self.output.rebind(publisher)
        self.iopub_socket = QueueSocket(publisher, self.flush_output)

    def interrupt(self):
        """Raise KeyboardInterrupt in the running shell request, if any."""
        glet = self.dispatcher.shell_greenlet
        if glet is None:
            return
        if glet is getcurrent():
            self._interrupt_current = True  # take_in_control raises once the reply is out
        else:
            glet.kill(KeyboardInterrupt, block=False)

    def take_in_control(self):
        """Read waiting control requests now, from a cell's greenlet (see :mod:`gkernel.cpuwatch`).

        Interrupt requests are served at once, so a cell spinning the CPU
        gets KeyboardInterrupt; the others are queued for the dispatcher.
        """
        if self._taking_in_control or self._forked:
            return
        self._taking_in_control = True
        try:
            interrupts = []
            while True:
                try:
                    frames = self.transport.control.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                request = self._parse("control", frames)
                if request is None:
                    continue
                if request.msg_type == "interrupt_request":
                    interrupts.append(request)
                else:
                    self.dispatcher.put(CONTROL, request)
            for request in interrupts:
                self._serve(request)
        finally:
            self._taking_in_control = False
        if self._interrupt_current:
            self._interrupt_current = False
            raise KeyboardInterrupt

    def ask_exit(self, keep_kernel=False):
        """exit()/quit() in a cell: reply, then shut down unless *keep_kernel*."""
        if self.dispatcher.shell_greenlet is None:
            if not keep_kernel:  # called from a greenlet after its cell ended
                self.shutdown_event.set()
            return
        self._exit_requested = keep_kernel

    # -- receiving -----------------------------------------------------------

    def _read(self, channel, priority):
        """Owner greenlet of a ROUTER socket's receiving side."""
        sock = getattr(self.transport, channel)
        while True:
            frames = sock.recv_multipart()
            request = self._parse(channel, frames)
            if request is not None:
                self.dispatcher.put(self._lane_of(request, priority), request)

    def _lane_of(self, request, priority):
        """The dispatcher lane of a request read with *priority*: a comm message's, its subshell's."""
        if priority == CONTROL:
            return CONTROL
        if request.msg_type in COMM_MESSAGES:
            return COMM
        subshell_id = request.msg["header"].get("subshell_id")
        if subshell_id is None:
            return SHELL
        if isinstance(subshell_id, str) and self.dispatcher.has_lane(subshell_id):
            return subshell_id
        request.error = UnknownSubshellError(subshell_id)
        return CONTROL  # answered at once, with busy and idle (a client waits for them)

    def _parse(self, channel, frames):
        """A Request, or None for a message that cannot be answered (logged)."""
        try:
            # Checks the HMAC signature and rejects replays before parsing anything.
            idents, msg, unparseable = self.session.parse_request(frames)
        except Exception as exc:
            self._drops.warning("%s: dropped an unauthenticated or malformed message (%d frames): %s",
                                channel, len(frames), exc)
            return None
        msg_type = msg["header"]["msg_type"]
        return Request(channel, idents, msg,
                       error=InvalidRequest(f"{msg_type}: {unparseable}") if unparseable else None)

    # -- serving -------------------------------------------------------------

    def _spawn_request(self, func, request, lane):
        # Each request roots its own spawn tree: see gkernel.cells. Lanes run side by side, and
        # greenlets running at once may not share a context: the main shell's requests run in the
        # kernel's context, each subshell's in one of its own, comm messages in a copy.
        cell = Cell(self, request.msg, request.idents)
        if lane == SHELL:
            context = self.user_context
        elif lane == COMM:
            context = self.user_context.copy()
        else:
            context = self._subshell_contexts[lane]
        return spawn_in_cell(cell, self._run_shell_request, func, cell, request, context=context)

    def _run_shell_request(self, func, cell, request):
        CELL_VAR.set(cell)  # in the kernel's context: asyncio tasks created by this cell copy it
        if self.debugger.started:
            self.debugger.enter_request(main_shell=self.dispatcher.shell_greenlet is getcurrent())
        try:
            return func(request)
        finally:
            cell.allow_stdin = False  # nobody answers input requests after the reply

    def _serve(self, request):
        msg, msg_type = request.msg, request.msg_type
        self.last_activity = time.time()
        self._channel_parents[request.channel] = msg
        if not self._subscribers_in:
            self._let_subscribers_in()
        self.publisher.publish("status", {"execution_state": "busy"}, parent=msg)
        try:
            if msg_type == "execute_request" and self._sent_before_abort(msg):
                self._reply(request, {"status": "aborted"})
                return
            content = self._answer(request)
            if self._forked:
                # A forked child returned from the cell: the parent answers, not us.
                self.flush_output()
                os._exit(0)
            self._reply(request, content)
        finally:
            self.last_activity = time.time()
            self.flush_output()
            self.publisher.publish("status", {"execution_state": "idle"}, parent=msg)
            if msg_type in COMM_MESSAGES and self.dispatcher.shell_request is not None:
                # Served beside a running cell. Its idle is needed (ipywidgets sends a model's next
                # update once the previous one is idle), but a front end takes any status for the
                # kernel's: the running cell's busy goes out again.
                self.publisher.publish("status", {"execution_state": "busy"},
                                       parent=self.dispatcher.shell_request.msg)
            if request.after_reply is not None:
                request.after_reply()

    def _let_subscribers_in(self):
        """Before the first request's output: wait (boundedly) for the clients to subscribe to IOPub.

        A new kernel can get its first request before any subscription: a
        client connects its SUB socket and sends a request at once, and
        after a restart on the same ports the clients of the previous kernel
        reconnect only at zmq's next reconnect attempt (100 to 200 ms apart),
        possibly after another client (jupyter_server's activity watcher)
        subscribed. What is published before a client subscribes never
        reaches it. So the first request waits until one client has
        subscribed and, when clients may be reconnecting, until the sockets
        have been bound for :data:`_RECONNECT_WINDOW`. Later clients need no
        wait: ``iopub_welcome`` tells them when their subscription is live.
        """
        self.publisher.wait_for_first_subscriber(self.iopub_subscriber_wait)
        if self._clients_may_reconnect:
            gevent.sleep(max(0.0, self.transport.bound_at + _RECONNECT_WINDOW - time.monotonic()))
        self._subscribers_in = True

    def _answer(self, request):
        """The reply content for *request*; None when no reply is possible."""
        msg_type = request.msg_type
        entry = _HANDLERS.get(msg_type)
        try:
            if request.error:
                raise request.error
            if entry is None:
                self.log.warning("%s: unknown message type %r", request.channel, msg_type)
                if not msg_type.endswith("_request"):
                    return None
                raise InvalidRequest(f"unknown message type {msg_type!r}")
            method, fields, needs_shell = entry
            kwargs = parse_content(msg_type, request.msg["content"], fields)
            if needs_shell:
                self._shell_built.wait()
                if self.shell is None:
                    raise InvalidRequest(f"{msg_type}: the kernel's IPython shell failed to start (see the kernel log)")
            return getattr(self, method)(request, **kwargs)
        except InvalidRequest as exc:
            self.log.warning("%s: %s", request.channel, exc)
            error = {"status": "error", "ename": type(exc).__name__, "evalue": str(exc), "traceback": []}
        except Exception as exc:
            self.log.exception("error while serving %s", msg_type)
            error = {"status": "error", "ename": type(exc).__name__, "evalue": str(exc),
                     "traceback": traceback.format_exception(exc)}
        # Only requests are answered (a comm message, say, gets no reply).
        return error if msg_type.endswith("_request") else None

    def _reply(self, request, content):
        if content is None:
            return
        reply_type = request.msg_type.rsplit("_", 1)[0] + "_reply"
        sock = getattr(self.transport, request.channel)
        # A ROUTER socket never blocks on send (it drops for absent peers), so
        # replying from the request's greenlet cannot contend with the reader.
        self.session.send(sock, reply_type, content, parent=request.msg, ident=request.idents,
                          metadata=request.reply_metadata)

    def get_parent(self, channel=None):
        """ipykernel's API: the request last served on *channel* ("shell" or "control");
        without a channel, the request the calling code's output belongs to."""
        if channel is None:
            return self.current_parent() or {}
        return self._channel_parents[channel] or {}

    def current_parent(self):
        """The request that output of the calling code belongs to: its cell's, else the latest cell's."""
        cell = current_cell()
        if cell is not None and cell.kernel is self:
            return cell.parent
        return self.last_parent

    def publish_for_caller(self, msg_type, content, **options):
        """Publish *content* for the calling code's request (:meth:`current_parent`), after what it printed.

        *options*: ``metadata``, ``buffers``, ``topic`` of :meth:`IOPubPublisher.publish`.
        """
        self.flush_output()
        self.publisher.publish(msg_type, content, parent=self.current_parent(), **options)

    def _abort_queued(self, msg):
        """After an error in request *msg*: abort every execute request of its (sub)shell sent
        before the error reply goes out.

        Whether a request was already queued, still unread in the socket or
        still on its way, its header's date says when the client sent it.
        """
        lane = msg["header"].get("subshell_id") or SHELL
        self._abort_sent_before[lane] = datetime.datetime.now(datetime.timezone.utc)

    def _sent_before_abort(self, msg):
        lane = msg["header"].get("subshell_id") or SHELL
        cutoff, date = self._abort_sent_before.get(lane), msg["header"].get("date")
        if cutoff is None or not isinstance(date, datetime.datetime):
            return False
        if date.tzinfo is None:  # a client that sends naive dates means UTC (jupyter_client's convention)
            date = date.replace(tzinfo=datetime.timezone.utc)
        return date < cutoff

    # -- handlers --------------------------------------------------------------

    @handles("execute_request", needs_shell=True, code=field(str), silent=field(bool, False),
             store_history=field(bool, True), user_expressions=field(dict, {}),
             allow_stdin=field(bool, True), stop_on_error=field(bool, True))
    def execute_request(self, request, code, silent, store_history, user_expressions,
                        allow_stdin, stop_on_error):
        store_history = store_history and not silent
        # When the cell started, as ipykernel reports it (the reply's own date says when it ended).
        request.reply_metadata["started"] = datetime.datetime.now(datetime.timezone.utc)
        cell = current_cell()
        if cell is None:
            # Sent on control, which the dispatcher serves itself, in no cell: ipykernel runs
            # these too, so it runs in a cell of its own while control waits for it, in a copy
            # of the kernel's context (a shell request may be running in the context itself).
            cell = Cell(self, request.msg, request.idents)
            run = functools.partial(self.execute_request, code=code, silent=silent, store_history=store_history,
                                    user_expressions=user_expressions, allow_stdin=allow_stdin,
                                    stop_on_error=stop_on_error)
            return spawn_in_cell(cell, self._run_shell_request, run, cell, request,
                                 context=self.user_context.copy()).get()
        cell.allow_stdin = allow_stdin
        shell = self.shell
        if store_history:
            cell.execution_count = shell.execution_count
        if not silent:
            self.last_parent = request.msg
            self.last_parent_at = time.monotonic()
            count = shell.execution_count if store_history else shell.execution_count - 1
            self.publisher.publish("execute_input", {"code": code, "execution_count": count},
                                   parent=request.msg)
        self._exit_requested = None
        cell.silent = silent
        # busy and execute_input reach the wire before any user code runs: a cell that spins the
        # CPU would not let the publisher greenlet send them until it ends.
        self.publisher.flush(timeout=1.0)
        cell_id = (request.msg.get("metadata") or {}).get("cellId")
        result = shell.run_cell(code, store_history=store_history, silent=silent, cell_id=cell_id)
        error = result.error_before_exec or result.error_in_exec
        if isinstance(error, gevent.GreenletExit):
            raise error  # the kernel is ending this cell (shutdown): no reply
        payload = shell.payload_manager.read_payload()
        shell.payload_manager.clear_payload()
        if self._exit_requested is not None:
            keep, self._exit_requested = self._exit_requested, None
            if not keep:  # as in the reference kernel: the reply goes out, then the kernel ends
                request.after_reply = self.shutdown_event.set
        reply = {"execution_count": shell.execution_count - 1, "payload": payload}
        if result.success and not cell.error_in_display:
            return {"status": "ok", **reply, "user_expressions": shell.user_expressions(user_expressions)}
        self.flush_output()
        if stop_on_error:
            self._abort_queued(request.msg)
        failure = cell.error or {"ename": type(error).__name__, "evalue": str(error), "traceback": []}
        return {"status": "error", **reply, "user_expressions": {}, **failure}

    @handles("kernel_info_request")
    def kernel_info_request(self, request):
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": "gkernel",
            "implementation_version": __version__,
            "language_info": {
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "file_extension": ".py",
                "pygments_lexer": "ipython3",
                "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
                "nbconvert_exporter": "python",
            },
            "banner": f"gkernel {__version__} on Python {platform.python_version()}: "
                      f"a gevent Python kernel (gevent {gevent.__version__})",
            "help_links": [
                {"text": "Python", "url": f"https://docs.python.org/{sys.version_info[0]}.{sys.version_info[1]}"},
                {"text": "gevent", "url": "https://www.gevent.org"},
            ],
            "debugger": self.debugger.available,
            "supported_features": ["kernel subshells"] + (["debugger"] if self.debugger.available else []),
        }

    @handles("complete_request", needs_shell=True, code=field(str), cursor_pos=field(int, None))
    def complete_request(self, request, code, cursor_pos):
        from IPython.core.completer import provisionalcompleter, rectify_completions

        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        with provisionalcompleter():
            completions = list(rectify_completions(code, self.shell.Completer.completions(code, cursor_pos)))
        start, end = (completions[0].start, completions[0].end) if completions else (cursor_pos, cursor_pos)
        types = [{"start": c.start, "end": c.end, "text": c.text, "type": c.type, "signature": c.signature}
                 for c in completions]
        return {"status": "ok", "matches": [c.text for c in completions], "cursor_start": start,
                "cursor_end": end, "metadata": {"_jupyter_types_experimental": types}}

    @handles("inspect_request", needs_shell=True, code=field(str), cursor_pos=field(int, None),
             detail_level=field(int, 0), omit_sections=field(list, []))
    def inspect_request(self, request, code, cursor_pos, detail_level, omit_sections):
        from IPython.utils.tokenutil import token_at_cursor

        name = token_at_cursor(code, len(code) if cursor_pos is None else cursor_pos)
        try:
            bundle = self.shell.object_inspect_mime(name, detail_level=detail_level, omit_sections=omit_sections)
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}
        if not self.shell.enable_html_pager:
            bundle.pop("text/html", None)
        return {"status": "ok", "found": True, "data": bundle, "metadata": {}}

    @handles("is_complete_request", needs_shell=True, code=field(str))
    def is_complete_request(self, request, code):
        status, indent = self.shell.input_transformer_manager.check_complete(code)
        return {"status": status, "indent": " " * (indent or 0)} if status == "incomplete" else {"status": status}

    @handles("history_request", needs_shell=True, hist_access_type=field(str), output=field(bool, False),
             raw=field(bool, True), session=field(int, 0), start=field(int, 0),
             stop=field(int, None), n=field(int, None), pattern=field(str, "*"),
             unique=field(bool, False))
    def history_request(self, request, hist_access_type, output, raw, session, start, stop,
                        n, pattern, unique):
        history = self.shell.history_manager
        if hist_access_type == "tail":
            rows = history.get_tail(10 if n is None else n, raw=raw, output=output, include_latest=True)
        elif hist_access_type == "range":
            rows = history.get_range(session, start, stop, raw=raw, output=output)
        elif hist_access_type == "search":
            rows = history.search(pattern, raw=raw, output=output, n=n, unique=unique)
        else:
            raise InvalidRequest(f"history_request: unknown hist_access_type {hist_access_type!r}")
        return {"status": "ok", "history": list(rows)}

    @handles("comm_info_request", target_name=field(str, None))
    def comm_info_request(self, request, target_name):
        return {"status": "ok", "comms": self.comm_manager.comm_info(target_name)}

    @handles("comm_open", needs_shell=True, comm_id=field(str), target_name=field(str))
    def comm_open(self, request, comm_id, target_name):
        self.comm_manager.comm_open(None, request.idents, request.msg)

    @handles("comm_msg", needs_shell=True, comm_id=field(str))
    def comm_msg(self, request, comm_id):
        self.comm_manager.comm_msg(None, request.idents, request.msg)

    @handles("comm_close", needs_shell=True, comm_id=field(str))
    def comm_close(self, request, comm_id):
        self.comm_manager.comm_close(None, request.idents, request.msg)

    @handles("connect_request")
    def connect_request(self, request):
        info = self.transport.info
        ports = {f"{name}_port": info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "hb", "control")}
        return {"status": "ok", **ports}

    @handles("usage_request")
    def usage_request(self, request):
        return self.usage.reply_content()

    @handles("create_subshell_request")
    def create_subshell_request(self, request):
        subshell_id = str(uuid.uuid4())
        self._subshell_contexts[subshell_id] = contextvars.Context()
        self.dispatcher.add_lane(subshell_id)
        return {"status": "ok", "subshell_id": subshell_id}

    @handles("delete_subshell_request", subshell_id=field(str))
    def delete_subshell_request(self, request, subshell_id):
        if subshell_id not in self._subshell_contexts:
            raise UnknownSubshellError(subshell_id)
        del self._subshell_contexts[subshell_id]
        self._abort_sent_before.pop(subshell_id, None)
        for queued in self.dispatcher.remove_lane(subshell_id):  # answered, not dropped
            queued.error = UnknownSubshellError(subshell_id)
            self.dispatcher.put(CONTROL, queued)
        return {"status": "ok"}

    @handles("list_subshell_request")
    def list_subshell_request(self, request):
        return {"status": "ok", "subshell_id": self.dispatcher.lanes()}

    @handles("debug_request", needs_shell=True)
    def debug_request(self, request):
        # The content is a DAP request, the reply's a DAP response (never a "status"): see gkernel.debugger.
        return self.debugger.handle(request.msg["content"])

    def publish_debug_event(self, event):
        """Publish a debugger event (a DAP event) on IOPub, parented as ipykernel does: to the shell
        request served last (a breakpoint's "stopped": the cell that hit it, typically)."""
        self.publisher.publish("debug_event", event, parent=self._channel_parents["shell"])

    @handles("interrupt_request")
    def interrupt_request(self, request):
        self.interrupt()
        return {"status": "ok"}

    @handles("shutdown_request", restart=field(bool, False))
    def shutdown_request(self, request, restart):
        content = {"status": "ok", "restart": restart}
        # Older clients listen for the shutdown on IOPub too.
        self.publisher.publish("shutdown_reply", content, parent=request.msg)
        request.after_reply = self.shutdown_event.set
        return content
