"""The management API of a ``gkernel serve`` host, and its client.

Requests and replies are Jupyter messages (jupyter_client's Session) on a
ROUTER socket bound to loopback: ``<op>_request`` with the op's arguments as
content, ``<op>_reply`` with ``status: ok`` and the result, or ``status:
error`` and ``evalue``. Every message is signed with the host's secret
(HMAC-SHA256; replays are rejected), which only the *host file* holds: a
JSON file of mode 0600 in the Jupyter runtime directory. A request with a
wrong or missing signature is dropped and logged, never answered.

Operations: ``create`` (returns the kernel's id and connection info; given
a former kernel's ``connection``, it binds the same ports with the same key),
``list``, ``interrupt``, ``restart``, ``shutdown`` (each with ``kernel_id``),
``stats`` and ``stop`` (end the host and all its kernels).

:class:`ManagementServer` runs in the host's hub; :class:`HostClient` is a
plain blocking client (native zmq, no gevent needed) for the provisioner,
``gkernel serve stop`` and scripts.
"""

import glob
import json
import os
import resource
import threading
import time

import gevent
import zmq

from ._trust import PrivacyError, private_file, process_matches
from .host import HostError
from .session import DropLog

__all__ = ["ManagementServer", "HostClient", "HostError", "find_host_file", "host_files"]

HOST_FILE_PATTERN = "gkernel-serve-*.json"


class ManagementServer:
    """Answers management requests for *host* on a bound green ROUTER *socket*."""

    def __init__(self, host, session, socket, log, stop):
        self.host = host
        self.session = session
        self.socket = socket
        self.log = log
        #: called for the ``stop`` operation, after its reply
        self._stop = stop
        self._greenlet = None
        self._drops = DropLog(log)

    def start(self):
        self._greenlet = gevent.spawn(self._run)

    def close(self):
        if self._greenlet is not None:
            self._greenlet.kill()
        self.socket.close(linger=500)

    def _run(self):
        """Serve requests until closed: no request, however malformed, ends this loop."""
        while True:
            frames = self.socket.recv_multipart()
            try:
                idents, msg, unparseable = self.session.parse_request(frames)
                msg_type = msg["header"]["msg_type"]
                if not msg_type.endswith("_request"):
                    raise ValueError(f"not a request: {str(msg_type)[:80]!r}")
                op = msg_type.removesuffix("_request")
            except Exception as exc:
                self._drops.warning("management: dropped an unauthenticated or malformed request: %s", exc)
                continue
            try:
                if unparseable:
                    content, after = {"status": "error", "evalue": f"{op}: {unparseable}"}, None
                else:
                    content, after = self._answer(op, msg["content"])
                self.session.send(self.socket, f"{op}_reply", content, parent=msg, ident=idents)
                if after is not None:
                    after()
            except Exception:
                self.log.exception("management: error while answering %s", op)

    def _answer(self, op, args):
        """(reply content, what to do once it is sent)."""
        host = self.host
        try:
            if not isinstance(args, dict):
                raise HostError(f"{op}: the request's content must be an object")
            if op == "create":
                connection = args.get("connection")  # a restart in place reuses ports and key
                if connection is not None and not isinstance(connection, dict):
                    raise HostError("create: connection must be a connection-info object")
                encrypt = args.get("encrypt", False)
                if not isinstance(encrypt, bool):
                    raise HostError("create: encrypt must be true or false")
                kernel = host.create(info=connection, encrypt=encrypt)
                return {"status": "ok", "kernel": host.describe(kernel)}, None
            if op == "list":
                return {"status": "ok", "kernels": [host.describe(k) for k in host.kernels.values()]}, None
            if op == "stats":
                return {"status": "ok", **self._stats()}, None
            if op == "stop":
                return {"status": "ok"}, self._stop
            if op in ("interrupt", "restart", "shutdown"):
                kernel_id = args.get("kernel_id")
                if not isinstance(kernel_id, str):
                    raise HostError(f"{op}: kernel_id (a string) is required")
                if op == "interrupt":
                    host.interrupt(kernel_id)
                    return {"status": "ok"}, None
                kernel = host.shutdown(kernel_id, restart=op == "restart")
                return {"status": "ok", "kernel": host.describe(kernel) if kernel else None}, None
            raise HostError(f"unknown operation {op!r}")
        except HostError as exc:
            self.log.warning("management: %s", exc)
            return {"status": "error", "evalue": str(exc)}, None
        except Exception as exc:  # a bug, not the caller's mistake; still answered
            self.log.exception("management: %s failed", op)
            return {"status": "error", "evalue": f"{op} failed: {type(exc).__name__}: {exc}"}, None

    def _stats(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"kernels": len(self.host.kernels), "max_kernels": self.host.max_kernels,
                "pid": os.getpid(), "started": self.host.started,
                "max_rss_kb": usage.ru_maxrss, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def host_files(runtime_dir=None):
    """Host files of running hosts, newest first; stale ones (their host is gone) are removed.

    Only private files of ours count (:mod:`gkernel._trust`): another user's,
    or one others could have written, is neither used nor removed. A host is
    running when its pid is a live process (not a zombie) that started when
    the file says.
    """
    from jupyter_core.paths import jupyter_runtime_dir

    def newest_first(path):
        try:
            return -os.path.getmtime(path)
        except OSError:
            return 0.0

    for path in sorted(glob.glob(os.path.join(runtime_dir or jupyter_runtime_dir(), HOST_FILE_PATTERN)),
                       key=newest_first):
        try:
            private_file(path)
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError, PrivacyError):
            continue
        if not isinstance(info, dict) or not process_matches(info.get("pid"), info.get("started")):
            try:
                os.remove(path)  # ours, and its host is gone
            except OSError:
                pass
            continue
        yield path


def find_host_file(runtime_dir=None):
    """The host file of the most recently started host that is still running, or None."""
    return next(host_files(runtime_dir), None)


class HostClient:
    """Blocking client of a host's management API (any thread; not for green code)."""

    def __init__(self, host_file=None, timeout=10.0):
        from jupyter_client.session import Session

        host_file = host_file or find_host_file()
        if host_file is None:
            raise HostError("no running gkernel serve host found (start one with: gkernel serve)")
        try:
            private_file(host_file)
            with open(host_file) as f:
                self.info = json.load(f)
        except PrivacyError as exc:
            raise HostError(f"refusing host file {host_file}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise HostError(f"cannot read host file {host_file}: {exc}") from None
        self.host_file = host_file
        self.timeout = timeout
        self._lock = threading.Lock()
        self.session = Session(key=self.info["key"].encode(), signature_scheme=self.info["signature_scheme"])
        # The process's shared context, as jupyter_client's clients use: a
        # provisioner per kernel must not mean a libzmq I/O thread per kernel.
        self._socket = zmq.Context.instance().socket(zmq.DEALER)
        self._socket.linger = 0
        if self.info.get("curve_publickey"):
            public, secret = self.info["curve_publickey"].encode(), self.info["curve_secretkey"].encode()
            self._socket.curve_publickey, self._socket.curve_secretkey = public, secret
            self._socket.curve_serverkey = public
        self._socket.connect(f"tcp://{self.info['ip']}:{self.info['port']}")

    def close(self):
        """Close the socket, once a request under way in another thread is done with it."""
        with self._lock:
            self._socket.close()

    def gone(self):
        """Whether the host has ended (it removes its host file first) or died (a zombie, a reused pid)."""
        return not process_matches(self.info.get("pid"), self.info.get("started")) or not os.path.exists(self.host_file)

    def ping(self, timeout=1.0):
        """Whether the host answers within *timeout* seconds."""
        try:
            self.request("stats", timeout=timeout)
            return True
        except HostError:
            return False

    def request(self, op, timeout=None, **args):
        """The reply content of ``op``; raises HostError on an error or no answer.

        Thread-safe (one request at a time): a provisioner calls from worker threads.
        """
        with self._lock:
            return self._request(op, self.timeout if timeout is None else timeout, args)

    def _request(self, op, timeout, args):
        if self._socket.closed:
            raise HostError(f"the client of {self.host_file} is closed")
        if self.gone():
            raise HostError(f"the host of {self.host_file} has ended")
        msg = self.session.send(self._socket, f"{op}_request", args)
        deadline = time.monotonic() + timeout
        while True:
            if not self._socket.poll(max(0.0, deadline - time.monotonic()) * 1000):
                raise HostError(f"the host did not answer {op} within {timeout:g} s "
                                f"(is it running? is {self.host_file} its host file?)")
            _, msg_list = self.session.feed_identities(self._socket.recv_multipart())
            reply = self.session.deserialize(msg_list)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                break
        if reply["content"].get("status") != "ok":
            raise HostError(reply["content"].get("evalue", "the host refused the request"))
        return reply["content"]

    def create(self, connection=None, encrypt=False):
        """A new kernel's description; *connection* reuses a former kernel's connection info,
        *encrypt* gives a new kernel a CurveZMQ key pair (in its connection info)."""
        args = {"connection": connection} if connection else {}
        if encrypt:
            args["encrypt"] = True
        return self.request("create", **args)["kernel"]

    def list(self):
        return self.request("list")["kernels"]

    def interrupt(self, kernel_id):
        self.request("interrupt", kernel_id=kernel_id)

    def restart(self, kernel_id):
        return self.request("restart", kernel_id=kernel_id)["kernel"]

    def shutdown(self, kernel_id):
        self.request("shutdown", kernel_id=kernel_id)

    def stats(self):
        return self.request("stats")

    def stop(self):
        self.request("stop")
