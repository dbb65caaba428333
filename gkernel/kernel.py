"""One Jupyter kernel: the protocol core over a bound :class:`~gkernel.transport.Transport`.

Owns, per kernel: the channel reader greenlets, the dispatcher, the IOPub
publisher, the output streams, the interpreter and its history, and the
heartbeat. Nothing per-kernel lives in module globals, so a process may host
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

import json
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
from traitlets import Float
from traitlets.config import LoggingConfigurable

from . import __version__
from ._threads import hub_thread_check
from .cells import Cell, cell_greenlets, current_cell, spawn_in_cell
from .dispatcher import CONTROL, SHELL, Dispatcher, settle
from .heartbeat import Heartbeat
from .history import HistoryManager
from .interpreter import Interpreter
from .iopub import IOPubPublisher
from .messages import InvalidRequest, field, parse_content
from .outstream import KernelOutput
from .stdin import StdinChannel, install_patches, remove_patches
from .usage import UsageMeter

__all__ = ["Kernel", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = "5.4"

#: msg_type -> (method name, declared content fields)
_HANDLERS = {}


def handles(msg_type, **fields):
    """Register the decorated method as the handler of *msg_type*."""
    def register(method):
        _HANDLERS[msg_type] = (method.__name__, fields)
        return method
    return register


class Request:
    """One received, authenticated request and what to do once it is answered."""

    __slots__ = ("channel", "idents", "msg", "error", "after_reply")

    def __init__(self, channel, idents, msg, error=None):
        self.channel = channel
        self.idents = idents
        self.msg = msg
        #: why the content could not be parsed, if it could not
        self.error = error
        self.after_reply = None

    @property
    def msg_type(self):
        return self.msg["header"]["msg_type"]


class ExitCommand:
    """``exit`` and ``quit`` in cells, as in the reference kernel.

    ``exit()`` answers the cell with an ``ask_exit`` payload, then the kernel
    shuts down cleanly; ``exit(keep_kernel=True)`` only sends the payload.
    ``sys.exit()`` stays an ordinary exception: an error reply, the kernel lives on.
    """

    def __init__(self, kernel):
        self._kernel = kernel

    def __repr__(self):
        return "Use exit() or quit() to shut this kernel down; exit(keep_kernel=True) keeps it running."

    def __call__(self, keep_kernel=False):
        self._kernel.ask_exit(keep_kernel)


class Kernel(LoggingConfigurable):
    """A Jupyter kernel for Python, served by greenlets of the current hub."""

    stream_flush_interval = Float(
        0.05, help="Seconds output may wait in a stream buffer before it is published."
    ).tag(config=True)

    def __init__(self, session, transport, kernel_id=None, cpu_watch=None, **kwargs):
        super().__init__(**kwargs)
        self.id = kernel_id or str(uuid.uuid4())
        self.session = session
        self.transport = transport
        self.publisher = IOPubPublisher(session, transport.iopub, self.log)
        self.output = KernelOutput(self.publisher, self.stream_flush_interval)
        #: fd-level captures (:mod:`gkernel.fdcapture`) the host attached; read before each flush
        self.captures = []
        self.stdin = StdinChannel(session, transport.stdin, self.log)
        #: the host's :class:`~gkernel.cpuwatch.CpuWatch`, armed while a cell runs
        self.cpu_watch = cpu_watch
        self.history = HistoryManager(parent=self)
        self.interpreter = Interpreter(self.id, self._publish_result, self.history, parent=self)
        self.interpreter.user_ns.update(exit=ExitCommand(self), quit=ExitCommand(self))
        self.dispatcher = Dispatcher(self._serve, self._spawn_request, self.log)
        self.heartbeat = Heartbeat(transport.context, transport.hb)
        self.usage = UsageMeter()
        #: the most recent non-silent execute_request: owner of output from outside any cell
        self.last_parent = None
        #: when the kernel last started or finished serving a request (epoch seconds)
        self.last_activity = time.time()
        #: set once a shutdown_request has been answered; the host then calls close()
        self.shutdown_event = Event()
        self._abort_remaining = 0
        self._readers = []
        self._forked = False
        self._taking_in_control = False
        self._interrupt_current = False
        #: keep_kernel of an exit() called during the current execute_request, if any
        self._exit_requested = None
        self._in_hub_thread = hub_thread_check()

    # -- life cycle ----------------------------------------------------------

    def start(self):
        self.publisher.start()
        self.stdin.start()
        install_patches(self)
        self.dispatcher.start()
        self.heartbeat.start()
        for channel, priority in (("shell", SHELL), ("control", CONTROL)):
            self._readers.append(gevent.spawn(self._read, channel, priority))
        # Clients may have subscribed while we started: welcome them first.
        settle()
        self.publisher.publish("status", {"execution_state": "starting"})

    def close(self):
        """Stop serving, end the greenlets the cells spawned, deliver what is queued, close the sockets."""
        self.stop_serving()
        gevent.killall(cell_greenlets([self]), timeout=1)
        self.release()

    def stop_serving(self):
        """First half of :meth:`close`: take no more requests."""
        # Readers go first: no greenlet may wait on a socket being closed.
        gevent.killall(self._readers, timeout=1)
        self.stdin.stop()
        self.dispatcher.stop()

    def release(self):
        """Second half of :meth:`close`, once the cells' greenlets are gone: flush, then close everything."""
        remove_patches(self)
        self.flush_output()
        self.publisher.flush(timeout=2.0)
        self.publisher.stop()
        self.heartbeat.stop()
        self.transport.close()
        self.history.close()

    def flush_output(self):
        """Publish everything written so far: C stdio and fd-level output, then the stream buffer."""
        if not self._in_hub_thread():
            self.output.flush()  # hands itself over to the hub thread
            return
        if self.captures:
            from .fdcapture import flush_c_stdio
            flush_c_stdio()
            for capture in self.captures:
                capture.poll((self, self.last_parent))
        self.output.flush()

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
        self.publisher = publisher
        self.output.rebind(publisher)

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
                self.dispatcher.put(priority, request)

    def _parse(self, channel, frames):
        """A Request, or None for a message that cannot be answered (logged)."""
        try:
            idents, msg_list = self.session.feed_identities(frames)
        except ValueError:
            self.log.warning("%s: dropped a message without the <IDS|MSG> delimiter (%d frames)",
                             channel, len(frames))
            return None
        try:
            # Checks the HMAC signature and rejects replays before parsing anything.
            msg = self.session.deserialize(msg_list)
            msg["header"]["msg_type"]
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # Authentic (parsing comes after the signature check) but unparseable.
            return self._unparseable(channel, idents, msg_list, exc)
        except Exception as exc:
            self.log.warning("%s: dropped an unauthenticated or malformed message: %s", channel, exc)
            return None
        return Request(channel, idents, msg)

    def _unparseable(self, channel, idents, msg_list, exc):
        """A Request answering with an error, when at least the header parses."""
        try:
            header = self.session.unpack(msg_list[1])
            header["msg_type"]
        except Exception:
            self.log.warning("%s: dropped a message whose header cannot be parsed: %s", channel, exc)
            return None
        msg = {"header": header, "msg_id": header.get("msg_id"), "msg_type": header["msg_type"],
               "parent_header": {}, "metadata": {}, "content": {}, "buffers": []}
        return Request(channel, idents, msg, error=f"content is not valid JSON: {exc}")

    # -- serving -------------------------------------------------------------

    def _spawn_request(self, func, request):
        # Each shell request roots its own spawn tree: see gkernel.cells.
        cell = Cell(self, request.msg, request.idents)
        return spawn_in_cell(cell, self._run_shell_request, func, cell, request)

    def _run_shell_request(self, func, cell, request):
        if self.cpu_watch is not None:
            self.cpu_watch.cell_started()
        try:
            func(request)
        finally:
            cell.allow_stdin = False  # nobody answers input requests after the reply
            if self.cpu_watch is not None:
                self.cpu_watch.cell_finished()

    def _serve(self, request):
        msg, msg_type = request.msg, request.msg_type
        self.last_activity = time.time()
        self.publisher.publish("status", {"execution_state": "busy"}, parent=msg)
        try:
            if request.channel == "shell" and self._abort_remaining:
                self._abort_remaining -= 1
                if msg_type == "execute_request":
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
            if request.after_reply is not None:
                request.after_reply()

    def _answer(self, request):
        """The reply content for *request*; None when no reply is possible."""
        msg_type = request.msg_type
        entry = _HANDLERS.get(msg_type)
        try:
            if request.error:
                raise InvalidRequest(f"{msg_type}: {request.error}")
            if entry is None:
                self.log.warning("%s: unknown message type %r", request.channel, msg_type)
                if not msg_type.endswith("_request"):
                    return None
                raise InvalidRequest(f"unknown message type {msg_type!r}")
            method, fields = entry
            kwargs = parse_content(msg_type, request.msg["content"], fields)
            return getattr(self, method)(request, **kwargs)
        except InvalidRequest as exc:
            self.log.warning("%s: %s", request.channel, exc)
            return {"status": "error", "ename": "InvalidRequest", "evalue": str(exc), "traceback": []}
        except Exception as exc:
            self.log.exception("error while serving %s", msg_type)
            return {"status": "error", "ename": type(exc).__name__, "evalue": str(exc),
                    "traceback": traceback.format_exception(exc)}

    def _reply(self, request, content):
        if content is None:
            return
        reply_type = request.msg_type.rsplit("_", 1)[0] + "_reply"
        sock = getattr(self.transport, request.channel)
        # A ROUTER socket never blocks on send (it drops for absent peers), so
        # replying from the request's greenlet cannot contend with the reader.
        self.session.send(sock, reply_type, content, parent=request.msg, ident=request.idents)

    def _publish_result(self, data, metadata, execution_count):
        self.flush_output()
        self.publisher.publish(
            "execute_result",
            {"execution_count": execution_count, "data": data, "metadata": metadata},
            parent=current_cell().parent,
        )

    def _abort_queued(self):
        """After an error: abort the execute requests already sent to us."""
        # Requests sent while a CPU-bound cell ran are still unread: take them in.
        settle()
        self._abort_remaining = self.dispatcher.shell_pending()

    # -- handlers --------------------------------------------------------------

    @handles("execute_request", code=field(str), silent=field(bool, False),
             store_history=field(bool, True), user_expressions=field(dict, {}),
             allow_stdin=field(bool, True), stop_on_error=field(bool, True))
    def execute_request(self, request, code, silent, store_history, user_expressions,
                        allow_stdin, stop_on_error):
        store_history = store_history and not silent
        current_cell().allow_stdin = allow_stdin
        interp = self.interpreter
        if not silent:
            self.last_parent = request.msg
            count = interp.execution_count + (1 if store_history else 0)
            self.publisher.publish("execute_input", {"code": code, "execution_count": count},
                                   parent=request.msg)
        self._exit_requested = None
        result = interp.run_cell(code, store_history=store_history, silent=silent)
        if self._exit_requested is not None:
            # As in the reference kernel: an ok reply with an ask_exit payload, then the kernel ends.
            keep, self._exit_requested = self._exit_requested, None
            result.payload.append({"source": "ask_exit", "keepkernel": keep})
            if not keep:
                request.after_reply = self.shutdown_event.set
        if result.error is None:
            return {"status": "ok", "execution_count": interp.execution_count,
                    "payload": result.payload,
                    "user_expressions": interp.user_expressions(user_expressions)}
        self.flush_output()
        if not silent:
            self.publisher.publish("error", result.error, parent=request.msg)
        if stop_on_error:
            self._abort_queued()
        return {"status": "error", "execution_count": interp.execution_count, **result.error}

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
                "pygments_lexer": "python3",
                "codemirror_mode": {"name": "python", "version": sys.version_info[0]},
                "nbconvert_exporter": "python",
            },
            "banner": f"gkernel {__version__} on Python {platform.python_version()}: "
                      f"a gevent Python kernel (gevent {gevent.__version__})",
            "help_links": [
                {"text": "Python", "url": f"https://docs.python.org/{sys.version_info[0]}.{sys.version_info[1]}"},
                {"text": "gevent", "url": "https://www.gevent.org"},
            ],
            "debugger": False,
        }

    @handles("complete_request", code=field(str), cursor_pos=field(int, None))
    def complete_request(self, request, code, cursor_pos):
        return self.interpreter.complete(code, len(code) if cursor_pos is None else cursor_pos)

    @handles("inspect_request", code=field(str), cursor_pos=field(int, None),
             detail_level=field(int, 0))
    def inspect_request(self, request, code, cursor_pos, detail_level):
        return self.interpreter.inspect(code, len(code) if cursor_pos is None else cursor_pos, detail_level)

    @handles("is_complete_request", code=field(str))
    def is_complete_request(self, request, code):
        return self.interpreter.is_complete(code)

    @handles("history_request", hist_access_type=field(str), output=field(bool, False),
             raw=field(bool, True), session=field(int, 0), start=field(int, 0),
             stop=field(int, None), n=field(int, None), pattern=field(str, "*"),
             unique=field(bool, False))
    def history_request(self, request, hist_access_type, output, raw, session, start, stop,
                        n, pattern, unique):
        # raw and translated input are the same here: cells are not transformed.
        history = self.history
        if hist_access_type == "tail":
            rows = history.tail(10 if n is None else n, output=output)
        elif hist_access_type == "range":
            rows = history.range(session, start, stop, output=output)
        elif hist_access_type == "search":
            rows = history.search(pattern, n=n, unique=unique, output=output)
        else:
            raise InvalidRequest(f"history_request: unknown hist_access_type {hist_access_type!r}")
        return {"status": "ok", "history": rows}

    @handles("comm_info_request", target_name=field(str, None))
    def comm_info_request(self, request, target_name):
        return {"status": "ok", "comms": {}}

    @handles("connect_request")
    def connect_request(self, request):
        info = self.transport.info
        ports = {f"{name}_port": info[f"{name}_port"] for name in ("shell", "iopub", "stdin", "hb", "control")}
        return {"status": "ok", **ports}

    @handles("usage_request")
    def usage_request(self, request):
        return self.usage.reply_content()

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
