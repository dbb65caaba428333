"""The Jupyter debugger protocol (``debug_request`` on control, ``debug_event`` on IOPub) over debugpy.

JupyterLab's debugger speaks the Debug Adapter Protocol (DAP) to the kernel,
wrapped in Jupyter messages; debugpy's pydevd does the debugging. What is
particular here, and why:

* **Greenlets are the debugger's threads.** pydevd is loaded after gevent's
  monkey-patching and without its ``GEVENT_SUPPORT`` mode, so it uses the
  patched ``threading``: each greenlet is a thread to it (``current_thread()``
  is per greenlet), its reader and writer are greenlets, and a greenlet stopped
  at a breakpoint waits on a cooperative event. So a breakpoint stops the
  greenlet that hit it and nothing else: the hub, the kernel's control
  channel, a ticker or a gevent server of an earlier cell and the other
  kernels of a ``gkernel serve`` host go on. (``GEVENT_SUPPORT`` would give
  pydevd real threads and a blocking wait: the whole process would stop.)
  The attach asks for ``stopAllThreadsOnSuspend: false`` for the same reason.
  Python's trace function does not follow greenlet switches by itself;
  :class:`DebugServer` re-applies pydevd's on every switch while a session is
  attached (greenlet's trace hook, as pydevd's own gevent mode does).
* **pydevd runs in-process** (``debugpy.listen(..., in_process_debug_adapter=True)``):
  no adapter subprocess, no extra hop. It accepts one connection: ours, made
  right after it listens and then checked to be the one it accepted (else
  debugging is off; a local process that won the race may have had its first
  commands read by then, as with ipykernel's adapter port).
* **One pydevd per process, one session per kernel.** :class:`DebugServer`
  owns the process's DAP connection and multiplexes the kernels'
  :class:`Debugger` sessions over it: it renumbers requests, returns each
  response to its session, and gives each event to the session whose kernel
  owns the thread. Cells are compiled under per-kernel file names
  (:class:`CellFiles`), and only the greenlets of kernels with a session are
  traced, so breakpoints of one kernel never stop another's code.
  A session drives only its kernel's threads.
* **Thread 1 is the kernel's main shell**, whichever greenlet runs its
  current cell (each request runs in a greenlet of its own). Front ends and
  ipykernel's tests address the main thread as 1 (JupyterLab pauses thread 1
  when nothing is stopped), as under ipykernel, where one thread runs every
  cell. The session swaps the two ids in everything it forwards.
* **Forks**: a forked child stops debugging without a word on the shared
  connection (:meth:`DebugServer._in_forked_child`).

debugpy is optional (``pip install gkernel[debugger]``): without it, or without
monkey-patching, kernel_info says ``debugger: false`` and a debug request gets
a DAP error response saying why.
"""

import ast
import base64
import contextvars
import functools
import importlib.metadata
import importlib.util
import itertools
import json
import os
import re
import reprlib
import secrets
import shutil
import sys
import tempfile
import threading
import weakref
from array import array

import gevent
import gevent.queue
import gevent.socket
from gevent.event import AsyncResult
from gevent.lock import Semaphore

from .cells import CELL_KEY

__all__ = ["CellFiles", "DebugServer", "Debugger", "murmur2"]

#: the seed of the cell file names' hash (any value: the front end reads it from debugInfo)
HASH_SEED = 0xC70F6907

#: the oldest debugpy the debugger runs on
MIN_DEBUGPY = (1, 8, 22)

#: seconds a debug request waits for pydevd's response
DAP_TIMEOUT = 10.0

#: what a session answers before initialize: the rest needs pydevd
_BEFORE_START = frozenset({"initialize", "disconnect", "configurationDone", "dumpCell", "debugInfo", "source",
                           "modules", "inspectVariables", "richInspectVariables"})

#: the name (DAP "threads") of the greenlet running a kernel's main-shell request
MAIN_SHELL_THREAD = "gkernel shell {}"

#: client-side id of the kernel's main shell (see the module docstring)
MAIN_THREAD_ID = 1
#: not looked up yet (see Debugger._main_shell_thread)
_UNKNOWN = object()

#: packages whose frames the debugger hides and never stops in: the kernel's own machinery
_INTERNAL_PACKAGES = ("gkernel", "gevent", "greenlet", "zmq", "IPython", "traitlets", "jupyter_client",
                      "comm", "debugpy", "matplotlib_inline")

#: names of the user namespace that are the shell's, not the user's (hidden from the variables panel)
_SHELL_NAMES = frozenset({"__name__", "__doc__", "__package__", "__loader__", "__spec__", "__annotations__",
                          "__builtins__", "__builtin__", "__display__", "get_ipython", "exit", "quit", "In",
                          "Out", "_oh", "_dh", "_", "__", "___"})
#: IPython's input and output history names: _i, _ii, _iii, _i<n>, _<n>
_HISTORY_NAME = re.compile(r"_i{1,3}|_i\d+|_\d+")


def murmur2(data, seed):
    """MurmurHash2 (32-bit, x86) of *data* (bytes).

    JupyterLab names the file of a cell ``<prefix><murmur2(code, seed)><suffix>``
    with the prefix, seed and suffix the kernel gives in ``debugInfo``; the
    kernel must compute the same name to compile the cell under it. None of
    our dependencies exposes this hash, and it is a few lines.
    """
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    length = len(data)
    h = (seed ^ length) & mask
    end = length & ~3
    words = array("I", data[:end])  # (a word at a time: a long cell is hashed at every run)
    if sys.byteorder == "big":
        words.byteswap()
    for k in words:
        k = (k * m) & mask
        k ^= k >> 24
        h = ((h * m) & mask) ^ ((k * m) & mask)
    tail = data[end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    return h ^ (h >> 15)


class CellFiles:
    """The file names a kernel's cells are compiled under, and their copies on disk.

    Named by the hash of the cell's code in a directory of the kernel's own,
    so that a breakpoint set in a cell's file stops that kernel's code only.
    Every cell is compiled under such a name while a debugger can start (it
    may start after the cell ran), but the directory is made (0700) only by
    the first ``dumpCell``: a kernel that is never debugged touches no file.
    """

    suffix = ".py"

    def __init__(self, kernel_id):
        #: unguessable, so nobody can make it before us (``dump`` refuses one that exists)
        self.directory = os.path.join(tempfile.gettempdir(), f"gkernel-{kernel_id[:8]}-{secrets.token_hex(8)}")
        self.prefix = self.directory + os.sep
        self._made = False
        #: the file name of a cell whose code is the argument (re-runs are common, hashing is not free)
        self.path = functools.lru_cache(maxsize=256)(self._path)

    def _path(self, code):
        return f"{self.prefix}{murmur2(code.encode('utf-8'), HASH_SEED)}{self.suffix}"

    def owns(self, path):
        return path.startswith(self.prefix)

    def dump(self, code):
        """Write *code* to its file (the debugger shows and steps through it there)."""
        if not self._made:
            os.mkdir(self.directory, 0o700)  # FileExistsError: not ours
            self._made = True
        path = self.path(code)
        with open(path, "w", encoding="utf-8") as file:
            file.write(code)
        return path

    def remove(self):
        if self._made:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._made = False


def response(request, success=True, body=None, message=None):
    """A DAP response to *request* (a dict)."""
    reply = {"type": "response", "seq": 0, "request_seq": request.get("seq", 0), "success": success,
             "command": request.get("command", "")}
    if body is not None:
        reply["body"] = body
    if message is not None:
        reply["message"] = message
    return reply


class GreenletTracing:
    """Python's tracing, per greenlet, for pydevd.

    Python keeps its trace function and its "inside a trace function" counter
    per OS thread, and greenlets share their thread's. Two consequences,
    which greenlet's switch hook repairs while a debugging session is on:

    * code of one greenlet would run under the tracer pydevd made for the
      greenlet that ran before it, as the wrong thread: each greenlet gets its
      own tracer back (pydevd keeps it in a thread local, which gevent makes
      greenlet-local), or pydevd's entry point, which makes one for a greenlet
      it has not seen;
    * a greenlet stopped at a breakpoint waits inside pydevd's trace function,
      and while the counter says "inside", Python traces nothing: no other
      greenlet could hit a breakpoint. Each greenlet gets its own count back
      (through ``PyThreadState_EnterTracing``/``LeaveTracing``; where the
      count lives in the thread state is found by watching which field they
      change).

    The hub is never traced: pydevd's tracer takes locks, which the hub cannot wait for.
    """

    def __init__(self, trace_dispatch, tracers, set_trace):
        import ctypes

        self._trace_dispatch = trace_dispatch
        self._tracers = tracers
        self._set_trace = set_trace
        # Prototypes of our own: setting restype/argtypes on ctypes.pythonapi's would change them
        # for every other user of ctypes in the process.
        get_tstate = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyThreadState_Get", ctypes.pythonapi))
        tracing = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)
        self._enter = tracing(("PyThreadState_EnterTracing", ctypes.pythonapi))
        self._leave = tracing(("PyThreadState_LeaveTracing", ctypes.pythonapi))
        self._tstate = get_tstate()
        self._count = self._find_count(ctypes)
        self._counts = weakref.WeakKeyDictionary()
        self._hub = gevent.get_hub()
        self._previous = None
        self._installed = False
        #: whether greenlets get pydevd's tracer (a session is on), or only their counts back
        self._tracing = False

    def _find_count(self, ctypes):
        fields = (ctypes.c_int * 64).from_address(self._tstate)
        before = list(fields)
        self._enter(self._tstate)
        after = list(fields)
        self._leave(self._tstate)
        changed = [i for i in range(64) if after[i] == before[i] + 1]
        if len(changed) != 1:
            raise DapError("cannot find Python's tracing counter in the thread state; debugging is off")
        return ctypes.c_int.from_address(self._tstate + changed[0] * ctypes.sizeof(ctypes.c_int))

    def start(self):
        import greenlet

        self._tracing = True
        if not self._installed:
            self._previous = greenlet.settrace(self._on_switch)
            self._installed = True

    def stop(self):
        """No more tracing. The hook stays until every greenlet stopped inside pydevd's trace
        function (resumed as the session ended) has had its count back."""
        self._tracing = False
        # Without this, the tracer last set (that of the greenlet calling stop) would go on
        # tracing every greenlet of the thread, as that greenlet's thread. Once that greenlet ends,
        # pydevd's tracer reports its thread dead (on 3.13+, where threading sees a finished
        # greenlet's dummy thread as done) from inside any traced call, also in pydevd's command
        # thread while it holds the lock that report takes: pydevd would hang for good.
        self._set_trace(None)
        if self._installed and not self._counts:
            self._uninstall()

    def _uninstall(self):
        import greenlet

        greenlet.settrace(self._previous)
        self._previous = None
        self._installed = False

    def _on_switch(self, event, args):
        # Runs in the greenlet switched to, inside greenlet's own "tracing" guard (count + 1).
        if event in ("switch", "throw"):  # (greenlet calls the hook of the thread it was set in)
            origin, target = args
            count = self._count.value - 1
            if count > 0:
                self._counts[origin] = count
            wanted = self._counts.pop(target, 0)
            for _ in range(count - wanted):
                self._leave(self._tstate)
            for _ in range(wanted - count):
                self._enter(self._tstate)
            if target is self._hub or not self._tracing:
                self._set_trace(None)
                if not self._tracing and not self._counts:
                    previous = self._previous
                    self._uninstall()
                    if previous is not None:
                        previous(event, args)
                    return
            elif (cell := _cell_of(target)) is not None and not cell.kernel.debugger.started:
                self._set_trace(None)  # see _cell_of
            else:
                tracer = getattr(self._tracers, "tracing_func", None)
                if tracer is None:
                    # pydevd traces only threads in threading's registry; current_thread() puts
                    # the greenlet there (as a gevent dummy thread). Named after its kernel, as
                    # request greenlets are (Debugger.enter_request): its events and its entry in
                    # "threads" go to that kernel's session without asking pydevd for its stack.
                    thread = threading.current_thread()
                    if cell is not None and not thread.name.startswith("gkernel "):
                        thread.name = f"gkernel {cell.kernel.id} {thread.name}"
                    tracer = self._trace_dispatch
                self._set_trace(tracer)
        if self._previous is not None:
            self._previous(event, args)


def _cell_of(glet):
    """The cell *glet* works for, or None. It runs under pydevd if its cell's kernel has a session,
    or if it belongs to no cell.

    In a host, a kernel's session must neither slow down (trace) nor stop
    another kernel's code, even at a breakpoint in a module both use.
    Greenlets of no cell (a gevent server's handlers, spawned by the hub) are
    traced while any session is on: that is where gevent code is debugged.
    """
    tree = getattr(glet, "spawn_tree_locals", None)
    return tree.get(CELL_KEY) if tree is not None else None


class DapError(Exception):
    """pydevd did not answer, or the connection to it is gone."""


class DebugServer:
    """pydevd for the whole process, and the one DAP connection the kernels' debuggers share.

    Owned by :class:`gkernel.process.ProcessRuntime`; nothing happens until a
    first session starts (importing debugpy takes a second).
    """

    def __init__(self, log):
        self.log = log
        #: why the debugger cannot run in this process, or None
        self.unavailable = self._unavailable()
        self._socket = None
        self._greenlets = []
        self._sessions = []
        self._seq = itertools.count(1)
        #: our seq -> the AsyncResult its response goes to
        self._pending = {}
        self._starting = Semaphore()
        self._capabilities = None
        self._attached = False
        #: pydevd's events, delivered in order by a greenlet that may itself ask pydevd (see _deliver)
        self._events = gevent.queue.Queue()
        self._send_lock = Semaphore()
        #: pydevd's tracing, carried over greenlet switches while a session is attached
        self._greenlet_tracing = None

    @staticmethod
    def _unavailable():
        if sys.version_info < (3, 11):
            return "the debugger needs Python 3.11+ (PyThreadState_EnterTracing, see GreenletTracing)"
        if importlib.util.find_spec("debugpy") is None:
            return "debugpy is not installed (pip install 'gkernel[debugger]')"
        from gevent import monkey

        if not monkey.is_module_patched("threading"):
            return ("the kernel runs without gevent's monkey-patching (--no-monkey-patch): a breakpoint "
                    "would stop the whole process, the debugger is off")
        return None

    # -- starting pydevd and the connection ------------------------------------

    def _start(self):
        """Load pydevd, listen, connect to it; once per process (pydevd cannot listen twice)."""
        with self._starting:
            if self._socket is not None:
                return
            if self.unavailable is not None:
                raise DapError(self.unavailable)
            # In a greenlet of no cell and no context of a kernel: pydevd's reader and writer and
            # ours are spawned from it, and must not belong to (and end with) the kernel that
            # happened to start the debugger first.
            starter = gevent.Greenlet(self._connect)
            starter.spawn_tree_locals = {}
            starter.gr_context = contextvars.Context()
            starter.start()
            try:
                starter.get()
            except Exception as exc:  # also debugpy's own errors (a cell already called debugpy.listen)
                self.unavailable = str(exc) if isinstance(exc, DapError) else f"{type(exc).__name__}: {exc}"
                raise DapError(self.unavailable) from None

    def _connect(self):
        # (Checked here, not at every process start: reading a distribution's version takes ms.)
        version = importlib.metadata.version("debugpy")
        if tuple(int(part) for part in version.split(".")[:3] if part.isdigit()) < MIN_DEBUGPY:
            # Older ones cannot report the port of an in-process pydevd listening on port 0.
            raise DapError(f"debugpy {version} is too old: pip install 'debugpy>={'.'.join(map(str, MIN_DEBUGPY))}'")
        # pydevd warns that frozen stdlib modules may hide breakpoints in them; cells are not frozen.
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        # On 3.12+ pydevd would use sys.monitoring; greenlets need its settrace mode (GreenletTracing).
        os.environ.setdefault("PYDEVD_USE_SYS_MONITORING", "0")
        import debugpy
        import debugpy.server.api  # noqa: F401  puts pydevd on the import path
        import pydevd
        import pydevd_tracing
        from _pydevd_bundle import pydevd_utils

        # pydevd nags about gevent unless in GEVENT_SUPPORT mode, which we avoid on purpose (module
        # docstring); in pydevd_utils this flag is read by that nag only.
        pydevd_utils.SUPPORT_GEVENT = True
        # To trace a new thread, pydevd first attaches to the OS thread of its id through a C helper
        # and a helper thread it waits for. A greenlet's id is no OS thread's, and the wait would
        # hang a greenlet on a lock released from another thread: "not attached" makes pydevd use
        # plain sys.settrace, which is what applies to the greenlets of this OS thread.
        pydevd_tracing.set_trace_to_threads = lambda *args, **kwargs: -1
        host, port = debugpy.listen(("127.0.0.1", 0), in_process_debug_adapter=True)
        sock = gevent.socket.create_connection((host, port), timeout=DAP_TIMEOUT)
        sock.settimeout(None)
        py_db = pydevd.get_global_debugger()
        try:
            with gevent.Timeout(DAP_TIMEOUT, DapError("pydevd did not accept the debugger's connection")):
                while (peer := _accepted_peer(py_db)) is None:
                    gevent.sleep(0.01)
        except DapError:
            sock.close()
            raise
        # Anyone on this machine may connect to a port on loopback; pydevd takes the first comer.
        ours = sock.getsockname()
        if peer != ours:
            # Whoever that is could run code here through pydevd: cut them off, debug no more.
            py_db.writer.sock.close()
            sock.close()
            raise DapError(f"another client ({peer}, not {ours}) connected to the debugger's port first; "
                           "debugging is off for this process")
        self._greenlet_tracing = GreenletTracing(
            py_db.trace_dispatch, pydevd_tracing._last_tracing_func_thread_local,
            pydevd_tracing.TracingFunctionHolder._original_tracing or sys.settrace)
        self._socket = sock
        self._greenlets = [gevent.spawn(self._read), gevent.spawn(self._deliver)]
        os.register_at_fork(after_in_child=self._in_forked_child)
        self.log.info("debugger: pydevd listening in-process on %s:%s", host, port)

    def close(self):
        """End debugging in this process, while the hub still runs (the process is ending).

        pydevd would otherwise end its reader and writer from an ``atexit``
        handler, in interpreter shutdown, where waiting for greenlets can hang.
        """
        sock = self._socket
        if sock is None:
            return
        self._end("the process is ending")
        import pydevd

        pydevd.stoptrace()
        gevent.killall(self._greenlets, timeout=1)
        sock.close()

    def _end(self, reason):
        """Debug no more in this process: no session, nothing traced, nobody waiting for pydevd."""
        self.unavailable = reason
        self._socket = None
        self._sessions.clear()
        self._greenlet_tracing.stop()
        for result in self._pending.values():
            result.set_exception(DapError(reason))

    def _in_forked_child(self):
        """A forked child shares the connection to pydevd, but is not the process it debugs.

        Left alone, the child's copies of pydevd's reader and writer and of
        ours would read the parent's messages and write into its stream. The
        child's descriptors of both ends now point at /dev/null (closing or
        shutting a socket down here would end the parent's connection too):
        the readers see the end of the stream, writes go nowhere.
        """
        sock = self._socket
        if sock is None:
            return
        import pydevd

        pydevd_sock = pydevd.get_global_debugger().writer.sock
        self._end("a forked child does not debug: its parent holds the debugger")
        devnull = os.open(os.devnull, os.O_RDWR)
        for each in (sock, pydevd_sock):
            os.dup2(devnull, each.fileno())
        os.close(devnull)
        gevent.killall(self._greenlets, block=False)

    # -- sessions ------------------------------------------------------------------

    def initialize(self, request):
        """The first session's initialize goes to pydevd; later ones get its capabilities."""
        self._start()
        with self._starting:  # (two kernels' sessions starting at once: one initialize for pydevd)
            if self._capabilities is None:
                reply = self.request(request)
                if reply.get("success"):
                    self._capabilities = reply.get("body", {})
                return reply
        return response(request, body=self._capabilities)

    def attach(self, session, request, arguments):
        """Attach pydevd once per process; later sessions join the same attach."""
        if not self._sessions:
            self._greenlet_tracing.start()
        if session not in self._sessions:
            self._sessions.append(session)
        with self._starting:  # (one attach for pydevd, as for initialize)
            if self._attached:
                return response(request)
            reply = self.request({**request, "arguments": arguments})
            self._attached = bool(reply.get("success"))
            if self._attached:
                # pydevd needs configurationDone before it stops anywhere; front ends send theirs later.
                self.request({"type": "request", "command": "configurationDone", "arguments": {}})
            return reply

    def detach(self, session):
        """End *session*: its breakpoints are cleared and its stopped threads resumed by the caller."""
        if session in self._sessions:
            self._sessions.remove(session)
            if not self._sessions:
                self._greenlet_tracing.stop()

    # -- requests and responses --------------------------------------------------

    def request(self, request, timeout=DAP_TIMEOUT):
        """Send *request* (a DAP request dict) to pydevd; its response, renumbered back."""
        if self._socket is None:
            raise DapError(self.unavailable or "the debugger is not started (send initialize first)")
        seq = next(self._seq)
        result = self._pending[seq] = AsyncResult()
        message = {**request, "seq": seq}
        body = json.dumps(message, default=repr).encode("utf-8")
        try:
            with self._send_lock:
                self._socket.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            reply = result.get(timeout=timeout)
        except gevent.Timeout:
            raise DapError(f"pydevd did not answer {request.get('command')!r} within {timeout:g} s") from None
        except OSError as exc:
            raise DapError(f"the connection to pydevd failed: {exc}") from None
        finally:
            self._pending.pop(seq, None)
        return {**reply, "request_seq": request.get("seq", 0)}

    def _read(self):
        sock = self._socket
        buffer = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                while True:
                    message, buffer = _take_frame(buffer)
                    if message is None:
                        break
                    self._dispatch(message)
        except Exception:
            if self._socket is sock:
                self.log.exception("debugger: reading from pydevd failed")
        if self._socket is sock:  # (not ended on purpose: close, or a forked child)
            self.log.error("debugger: the connection to pydevd is closed; debugging is off for this process")
            self._end("the connection to pydevd closed")

    def _dispatch(self, message):
        if message.get("type") == "response":
            result = self._pending.get(message.get("request_seq"))
            if result is not None:
                result.set(message)
            return
        if message.get("type") == "event" and message.get("event") != "thread":
            # (one "thread" event per greenlet: noise that no front end uses)
            self._events.put(message)

    def _deliver(self):
        """Hand pydevd's events to sessions, in order; not in the reader, as routing asks pydevd."""
        for event in self._events:
            try:
                for session in self._owners(event):
                    session.on_event(event)
            except Exception:
                self.log.exception("debugger: could not deliver %s", event.get("event"))

    def _owners(self, event):
        """The sessions an event is for: the one whose kernel the event's thread works for."""
        thread_id = (event.get("body") or {}).get("threadId")
        if thread_id is None or len(self._sessions) < 2:
            return list(self._sessions)
        try:
            threads = self.request({"type": "request", "command": "threads", "arguments": {}})
            names = {thread["id"]: thread["name"] for thread in threads.get("body", {}).get("threads", [])}
        except DapError:
            names = {}
        owners = [session for session in self._sessions if session.owns_thread(thread_id, names.get(thread_id))]
        if not owners and event.get("event") == "stopped":
            owners = self._owners_by_stack(thread_id)
        return owners or list(self._sessions)

    def _owners_by_stack(self, thread_id):
        """The sessions whose cells are on a stopped thread's stack (a greenlet a cell spawned)."""
        try:
            trace = self.request({"type": "request", "command": "stackTrace",
                                        "arguments": {"threadId": thread_id}})
        except DapError:
            return []
        paths = [frame.get("source", {}).get("path", "") for frame in trace.get("body", {}).get("stackFrames", [])]
        return [session for session in self._sessions if any(session.cell_files.owns(path) for path in paths)]

    def internal_paths(self):
        """Directories of the packages the debugger hides (pydevd "rules")."""
        paths = []
        for name in _INTERNAL_PACKAGES:
            module = sys.modules.get(name)
            if module is not None and getattr(module, "__file__", None):
                paths.append(os.path.dirname(module.__file__))
        return paths


def _accepted_peer(py_db):
    """The address of the client pydevd accepted, None before it accepts one."""
    sock = getattr(getattr(py_db, "writer", None), "sock", None)
    try:
        peer = sock.getpeername()
    except (AttributeError, OSError):
        return None
    return peer if isinstance(peer, tuple) else None  # before: pydevd's Null, which answers anything


def _take_frame(buffer):
    """(message, rest) if *buffer* starts with a whole DAP frame, else (None, buffer)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None, buffer
    length = None
    for line in buffer[:end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ValueError(f"DAP frame without Content-Length: {buffer[:end]!r}")
    start = end + 4
    if len(buffer) < start + length:
        return None, buffer
    return json.loads(buffer[start:start + length]), buffer[start + length:]


class Debugger:
    """One kernel's debugging session: the handler of its ``debug_request`` messages."""

    def __init__(self, kernel, server):
        self.kernel = kernel
        self.server = server
        self.log = kernel.log
        self.cell_files = CellFiles(kernel.id)
        self.started = False
        #: source path -> the breakpoints pydevd accepted there
        self.breakpoints = {}
        #: pydevd ids of this kernel's threads stopped now
        self.stopped = set()
        #: pydevd id of the greenlet running the main shell's request: None if there is none,
        #: _UNKNOWN until pydevd's thread list was looked at since the last request began
        self._main_thread = _UNKNOWN
        self._variables = _VariableTable()
        self._removed_transforms = []
        #: set by close: a request served while the kernel closes must not start a session again
        self._closed = False

    @property
    def available(self):
        return self.server is not None and self.server.unavailable is None and not self._closed

    # -- the debug_request handler -----------------------------------------------

    def handle(self, request):
        """The ``debug_reply`` content for a ``debug_request``'s content (a DAP request)."""
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return response(request if isinstance(request, dict) else {}, False,
                            message="a debug_request's content must be a DAP request with a command")
        command = request["command"]
        arguments = request.get("arguments") or {}
        if not isinstance(arguments, dict):
            return response(request, False, message=f"{command}: arguments must be an object")
        if not self.available:
            reason = ("the kernel is closing" if self._closed else
                      self.server.unavailable if self.server is not None else "this kernel has no debugger")
            return response(request, False, message=f"debugger unavailable: {reason}")
        if not self.started and command not in _BEFORE_START:
            return response(request, False, message=f"{command}: the debugger is not started "
                                                    "(send initialize, then attach)")
        local = getattr(self, f"_on_{command}", None)
        try:
            return local(request, arguments) if local is not None else self._forward(request, arguments)
        except DapError as exc:
            return response(request, False, message=str(exc))
        except Exception as exc:  # a bad argument, or a bug: still a DAP response, and logged
            self.kernel.log.exception("debugger: %s failed", command)
            return response(request, False, message=f"{command} failed: {type(exc).__name__}: {exc}")

    def _forward(self, request, arguments):
        if "threadId" in arguments:
            arguments = {**arguments, "threadId": self._own_thread(arguments["threadId"], request["command"])}
        reply = self.server.request({**request, "arguments": arguments})
        body = reply.get("body")
        if isinstance(body, dict) and isinstance(body.get("threads"), list):
            self._main_shell_thread(body["threads"])
            body["threads"] = [self._thread_for_client(t) for t in body["threads"] if self.owns_thread(t["id"], t["name"])]
        if request["command"] == "variables" and isinstance(body, dict):
            body["variables"] = [v for v in body.get("variables", []) if _user_name(v.get("name", ""))]
        return reply

    # -- commands the kernel answers itself ------------------------------------------

    def _on_initialize(self, request, arguments):
        reply = self.server.initialize(request)
        if reply.get("success"):
            self.started = True
            self._keep_leading_empty_lines(True)
        return reply

    def _on_attach(self, request, arguments):
        arguments = {**arguments, "justMyCode": False, "stopAllThreadsOnSuspend": False,
                     "steppingResumesAllThreads": False, "redirectOutput": False,
                     "rules": [{"path": path, "include": False} for path in self.server.internal_paths()]}
        arguments.pop("connect", None)
        return self.server.attach(self, request, arguments)

    def _on_continue(self, request, arguments):
        """Resume the kernel's stopped threads (one with ``singleThread``), never another kernel's.

        pydevd's continue resumes every thread of the process unless told one.
        """
        if "threadId" not in arguments:
            return response(request, False, message="continue: threadId is required")
        wanted = self._own_thread(arguments["threadId"], "continue")
        others = [] if arguments.get("singleThread") else [t for t in self.stopped if t != wanted]
        reply = None
        for thread_id in [wanted, *others]:
            resumed = self.server.request({**request, "arguments": {**arguments, "threadId": thread_id,
                                                                     "singleThread": True}})
            reply = reply or resumed
        return {**reply, "body": {"allThreadsContinued": not arguments.get("singleThread")}}

    def _on_configurationDone(self, request, arguments):
        return response(request)  # pydevd got it at attach (see DebugServer.attach)

    def _on_disconnect(self, request, arguments):
        """Stop debugging this kernel; the kernel goes on (a terminateDebuggee would end the process)."""
        if self.started:
            self.stop()
        return response(request)

    def stop(self):
        """End the session: clear its breakpoints, resume its stopped threads."""
        for path in list(self.breakpoints):
            try:
                self.server.request({"type": "request", "command": "setBreakpoints",
                                           "arguments": {"source": {"path": path}, "breakpoints": []}})
            except DapError:
                pass
        for thread_id in list(self.stopped):
            try:
                self.server.request({"type": "request", "command": "continue",
                                           "arguments": {"threadId": thread_id, "singleThread": True}})
            except DapError:
                pass
        self.breakpoints.clear()
        self.stopped.clear()
        self.server.detach(self)
        self._keep_leading_empty_lines(False)
        self.started = False

    def close(self):
        """The kernel is closing."""
        self._closed = True
        if self.started:
            self.stop()
        self.cell_files.remove()

    def _on_dumpCell(self, request, arguments):
        code = arguments.get("code")
        if not isinstance(code, str):
            return response(request, False, message="dumpCell: code must be a string")
        try:
            return response(request, body={"sourcePath": self.cell_files.dump(code)})
        except OSError as error:
            return response(request, False, message=f"dumpCell: cannot write the cell's file: {error}")

    def _on_debugInfo(self, request, arguments):
        return response(request, body={
            "isStarted": self.started,
            "hashMethod": "Murmur2",
            "hashSeed": HASH_SEED,
            "tmpFilePrefix": self.cell_files.prefix,
            "tmpFileSuffix": CellFiles.suffix,
            "breakpoints": [{"source": path, "breakpoints": bps} for path, bps in self.breakpoints.items()],
            "stoppedThreads": sorted(self._to_client(t) for t in self.stopped),
            "richRendering": True,
            "exceptionPaths": ["Python Exceptions"],
            "copyToGlobals": True,
        })

    def _on_setBreakpoints(self, request, arguments):
        path = (arguments.get("source") or {}).get("path")
        reply = self.server.request(request)
        if reply.get("success") and isinstance(path, str):
            placed = [{"line": bp["line"]} for bp in reply.get("body", {}).get("breakpoints", []) if "line" in bp]
            if placed:
                self.breakpoints[path] = placed
            else:
                self.breakpoints.pop(path, None)
        return reply

    def _on_source(self, request, arguments):
        path = (arguments.get("source") or {}).get("path")
        try:
            with open(path, encoding="utf-8") as file:
                return response(request, body={"content": file.read()})
        except (OSError, TypeError, ValueError) as exc:
            return response(request, False, message=f"source unavailable: {exc}")

    def _on_modules(self, request, arguments):
        modules = list(sys.modules.values())
        start = arguments.get("startModule", 0)
        count = arguments.get("moduleCount", len(modules))
        listed = []
        for index, module in enumerate(modules[start:start + count], start):
            path = getattr(getattr(module, "__spec__", None), "origin", None)
            if path and path.endswith(".py"):
                listed.append({"id": index, "name": module.__name__, "path": path})
        return response(request, body={"modules": listed, "totalModules": len(modules)})

    def _on_inspectVariables(self, request, arguments):
        """The user's variables, when nothing is stopped (the panel's view between cells)."""
        self._variables = _VariableTable()
        shell = self.kernel.shell
        # What %who lists: not the names IPython put there itself (unless the user rebound them).
        hidden = shell.user_ns_hidden
        namespace = {name: value for name, value in list(shell.user_ns.items())
                     if _user_name(name) and not (name in hidden and hidden[name] is value)}
        return response(request, body={"variables": self._variables.children(namespace)})

    def _on_variables(self, request, arguments):
        if self.stopped:
            return self._forward(request, arguments)
        reference = arguments.get("variablesReference")
        return response(request, body={"variables": self._variables.expand(reference)})

    def _on_richInspectVariables(self, request, arguments):
        name = arguments.get("variableName")
        if not isinstance(name, str) or not name.isidentifier():
            # The panel's groups ("special variables") have no rich form.
            return response(request, body={"data": {}, "metadata": {}})
        frame_id = arguments.get("frameId")
        if self.stopped and frame_id is not None:
            reply = self.server.request({
                "type": "request", "command": "evaluate",
                "arguments": {"expression": f"get_ipython().display_formatter.format({name})",
                              "frameId": frame_id, "context": "clipboard"}})
            if not reply.get("success"):
                return response(request, False, message=reply.get("message"))
            data, metadata = ast.literal_eval(reply["body"]["result"])
        else:
            result = self.kernel.shell.user_expressions({name: name})[name]
            if result.get("status") != "ok":
                return response(request, False, message=f"{result.get('ename')}: {result.get('evalue')}")
            data, metadata = result.get("data", {}), result.get("metadata", {})
        data = {mime: _jsonable(value) for mime, value in data.items()}
        return response(request, body={"data": data,
                                       "metadata": {k: v for k, v in metadata.items() if k in data}})

    def _on_copyToGlobals(self, request, arguments):
        source, target = arguments.get("srcVariableName"), arguments.get("dstVariableName")
        if not all(isinstance(name, str) and name.isidentifier() for name in (source, target)):
            return response(request, False,
                            message="copyToGlobals: srcVariableName and dstVariableName must be identifiers")
        reply = self.server.request({
            "type": "request", "command": "setExpression",
            "arguments": {"expression": f"globals()[{target!r}]", "value": source,
                          "frameId": arguments.get("srcFrameId")}})
        return {**reply, "command": request["command"]}

    # -- events and threads -----------------------------------------------------------

    def on_event(self, event):
        """An event of pydevd for this kernel: note stopped threads, publish it on IOPub."""
        body = event.get("body") or {}
        thread_id = body.get("threadId")
        if event.get("event") == "stopped" and thread_id is not None:
            self.stopped.add(thread_id)
        elif event.get("event") == "continued":
            if body.get("allThreadsContinued"):
                self.stopped.clear()
            else:
                self.stopped.discard(thread_id)
        if thread_id is not None:
            event = {**event, "body": {**body, "threadId": self._to_client(thread_id)}}
        self.kernel.publish_debug_event(event)

    def enter_request(self, main_shell):
        """Called in the greenlet of each request while a session is on: name it for the debugger."""
        thread = threading.current_thread()
        if main_shell:
            thread.name = MAIN_SHELL_THREAD.format(self.kernel.id)
            self._main_thread = _UNKNOWN  # learnt from pydevd's "threads" when needed
        else:
            thread.name = f"gkernel {self.kernel.id} {thread.name}"

    def owns_thread(self, thread_id, name):
        """Whether pydevd's thread *thread_id* (named *name*) works for this kernel."""
        return thread_id in self.stopped or (name is not None and self.kernel.id in name)

    def _main_shell_thread(self, threads=None):
        """The main shell's pydevd id, or None; *threads*: pydevd's thread list, if at hand."""
        if self._main_thread is _UNKNOWN:
            if threads is None:
                reply = self.server.request({"type": "request", "command": "threads", "arguments": {}})
                threads = reply.get("body", {}).get("threads", [])
            wanted = MAIN_SHELL_THREAD.format(self.kernel.id)
            self._main_thread = next((t["id"] for t in threads if t.get("name") == wanted), None)
        return self._main_thread

    def _own_thread(self, client_id, command):
        """pydevd's id of the client's thread *client_id*; DapError unless it is this kernel's."""
        main = self._main_shell_thread()
        if client_id == MAIN_THREAD_ID:
            if main is None:
                raise DapError(f"{command}: thread 1 (the main shell) runs no cell")
            return main
        thread_id = MAIN_THREAD_ID if client_id == main else client_id
        if thread_id not in self.stopped and thread_id != main:
            reply = self.server.request({"type": "request", "command": "threads", "arguments": {}})
            names = {t.get("id"): t.get("name") for t in reply.get("body", {}).get("threads", [])}
            if not self.owns_thread(thread_id, names.get(thread_id)):
                raise DapError(f"{command}: thread {client_id} is not one of this kernel's")
        return thread_id

    def _to_client(self, thread_id):
        """The id the client knows pydevd's thread *thread_id* by: the main shell is thread 1."""
        main = self._main_shell_thread()
        if main is None or thread_id not in (main, MAIN_THREAD_ID):
            return thread_id
        return MAIN_THREAD_ID if thread_id == main else main

    def _thread_for_client(self, thread):
        thread_id = self._to_client(thread["id"])
        name = "shell" if thread_id == MAIN_THREAD_ID else thread["name"].replace(f"gkernel {self.kernel.id} ", "")
        return {**thread, "id": thread_id, "name": name}

    def _keep_leading_empty_lines(self, keep):
        """While debugging, a cell's leading empty lines stay, so that its lines are the editor's."""
        shell = self.kernel.shell
        if shell is None:
            return
        from IPython.core.inputtransformer2 import leading_empty_lines

        transforms = shell.input_transformer_manager.cleanup_transforms
        if keep and leading_empty_lines in transforms:
            transforms.remove(leading_empty_lines)
            self._removed_transforms.append(leading_empty_lines)
        elif not keep:
            while self._removed_transforms:
                transforms.insert(0, self._removed_transforms.pop())


def _user_name(name):
    """Not one of the names IPython puts in the namespace (``In``, ``_i3``, ``_3``...): ``_items`` is the user's."""
    return name not in _SHELL_NAMES and _HISTORY_NAME.fullmatch(name) is None


def _jsonable(value):
    return base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value


class _VariableTable:
    """The variables panel's view of the user namespace while nothing is stopped.

    pydevd can only show the variables of a stopped frame; between cells the
    panel lists the namespace and expands containers through these references.
    This runs on the control channel: values are shown by a bounded ``repr``
    (a ten-million-item list must not cost seconds) and at most
    ``_MAX_ITEMS`` children per container.
    """

    def __init__(self):
        #: reference -> (value, the expression that evaluates to it in the namespace)
        self._objects = {}
        self._next = itertools.count(1)

    def children(self, namespace):
        return [self._describe(name, name, value) for name, value in namespace.items()]

    def expand(self, reference):
        value, expression = self._objects.get(reference, (None, ""))
        return [self._describe(name, f"{expression}{suffix}" if suffix else "", child)
                for name, suffix, child in _items_of(value)]

    def _describe(self, name, expression, value):
        try:
            text, expandable = _BOUNDED_REPR.repr(value), _has_items(value)
        except Exception as exc:  # the user's __repr__, __len__ or __getattr__
            text, expandable = f"<repr failed: {type(exc).__name__}>", False
        reference = 0
        if expandable:
            reference = next(self._next)
            self._objects[reference] = (value, expression)
        return {"name": name, "value": text, "type": type(value).__name__, "evaluateName": expression,
                "variablesReference": reference}


_MAX_ITEMS = 300
_BOUNDED_REPR = reprlib.Repr()
_BOUNDED_REPR.maxlist = _BOUNDED_REPR.maxtuple = _BOUNDED_REPR.maxset = _BOUNDED_REPR.maxdict = 100
_BOUNDED_REPR.maxstring = _BOUNDED_REPR.maxother = 1000
_BOUNDED_REPR.maxlevel = 3
_SCALARS = (str, bytes, int, float, complex, bool, type(None))


def _has_items(value):
    if isinstance(value, _SCALARS):
        return False
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return len(value) > 0
    return bool(getattr(value, "__dict__", None))


def _items_of(value):
    """(name, expression suffix, child) of a container's items or an object's attributes."""
    if value is None or isinstance(value, _SCALARS):
        return []
    if isinstance(value, dict):
        return [(repr(k), f"[{k!r}]", v) for k, v in itertools.islice(value.items(), _MAX_ITEMS)]
    if isinstance(value, (list, tuple)):
        return [(str(i), f"[{i}]", v) for i, v in enumerate(value[:_MAX_ITEMS])]
    if isinstance(value, (set, frozenset)):
        return [(str(i), "", v) for i, v in enumerate(itertools.islice(value, _MAX_ITEMS))]
    attributes = getattr(value, "__dict__", None)
    return [(k, f".{k}", v) for k, v in list(attributes.items())[:_MAX_ITEMS]] if isinstance(attributes, dict) else []
