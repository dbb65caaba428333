"""Binding a kernel's five channels from connection info.

Shell, control and stdin are ROUTER sockets, IOPub an XPUB socket (a PUB
that also reports subscriptions, so new subscribers can be welcomed); the
heartbeat endpoint is bound on the process's one heartbeat socket
(:mod:`gkernel.heartbeat`).

Sockets are bound as native zmq sockets as soon as the connection info is
known, before gevent is set up: a client that connects to a port nobody has
bound yet is refused and retries only after zmq's reconnect interval (100 ms),
so binding early lets its first request wait in our socket instead.
:meth:`Transport.green` then wraps the channel sockets in ``zmq.green``
shadows (the same libzmq sockets), so waiting on them yields to the hub.

With a CurveZMQ key pair in the connection info (``curve_publickey`` and
``curve_secretkey``, which jupyter_client 8.9+ writes when its manager asks
for ``transport_encryption``), every endpoint, the heartbeat's included, is a
CURVE server with that pair: traffic is encrypted, and a client that does not
know the kernel's public key (or speaks plaintext, even with the HMAC key)
cannot connect. The options apply per endpoint, at bind time, so the
process's one heartbeat socket serves encrypted and plaintext kernels side by side.

Ports given as 0 are chosen here by binding to a random port, and the chosen
ones are written back into the connection info, so a connection file written
afterwards never names a port someone else grabbed in between.

This module knows nothing about what travels on the sockets.
"""

import os
import time

import zmq

__all__ = ["CHANNELS", "Transport", "curve_keys"]

CHANNELS = {
    "shell": zmq.ROUTER,
    "control": zmq.ROUTER,
    "stdin": zmq.ROUTER,
    "iopub": zmq.XPUB,
}


def curve_keys(info):
    """The CurveZMQ key pair (public, secret) of connection *info* as bytes, or None.

    Raises ValueError, with the reason, for a pair that cannot be used.
    """
    public, secret = info.get("curve_publickey"), info.get("curve_secretkey")
    if not public and not secret:
        return None
    if not zmq.has("curve"):
        raise ValueError("the connection info asks for CurveZMQ encryption, which this libzmq lacks")
    keys = []
    for name, value in (("curve_publickey", public), ("curve_secretkey", secret)):
        if isinstance(value, str):
            value = value.encode("ascii", "replace")
        if not isinstance(value, bytes) or len(value) != 40:
            raise ValueError(f"connection info: {name} must be a 40-character Z85 CurveZMQ key")
        keys.append(value)
    try:
        matches = zmq.curve_public(keys[1]) == keys[0]
    except (zmq.ZMQError, ValueError, KeyError):
        raise ValueError("connection info: curve_secretkey is not a Z85 CurveZMQ key") from None
    if not matches:
        raise ValueError("connection info: curve_publickey is not the public key of curve_secretkey")
    return tuple(keys)


def new_curve_keys():
    """A new CurveZMQ key pair, as connection info fields; ValueError where libzmq has no CurveZMQ."""
    if not zmq.has("curve"):
        raise ValueError("this libzmq has no CurveZMQ (it needs libsodium)")
    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}


#: what a process warns (once) when it serves TCP channels without CurveZMQ
PLAINTEXT_WARNING = ("the channels are not encrypted: code and output travel over TCP as plain text, readable by "
                     "whoever can watch the traffic. To encrypt them, start kernels with jupyter_client 8.9+'s "
                     "KernelManager(transport_encryption='auto')")


def _endpoint(transport, ip, port):
    if transport == "tcp":
        return f"tcp://{ip}:{port}"
    return f"{transport}://{ip}-{port}"


def _ignore(*args):
    """What a forgotten socket does when told its state may have changed (see Transport.forget)."""


class Transport:
    """The bound sockets of one kernel.

    ``context`` is a native ``zmq.Context`` (the host owns and destroys it);
    ``info`` a connection-info dict (``transport``, ``ip``, ``*_port``) whose
    zero ports are filled in; ``heartbeat`` the process's
    :class:`~gkernel.heartbeat.Heartbeat`; ``iopub_hwm`` is the IOPub send
    high-water mark (messages per subscriber). After :meth:`green`, the
    attributes ``shell``, ``control``, ``stdin`` and ``iopub`` are green sockets.
    """

    def __init__(self, context, info, heartbeat, iopub_hwm=1000, green_context=None):
        self.context = context
        self.info = info
        self._heartbeat = heartbeat
        self._iopub_hwm = iopub_hwm
        self._green = green_context is not None
        #: the CurveZMQ key pair every endpoint is a server with, or None (plaintext)
        self.curve = curve_keys(info)
        self._native = {}
        self._hb_endpoint = None
        try:
            for name, kind in CHANNELS.items():
                # Given a green context (the hub already runs), channel sockets
                # are green from the start: each libzmq socket then has exactly
                # one Python owner. (A native socket and its green shadow would
                # both close the handle, and the second close could hit a new
                # socket that reuses the address once a host discards kernels.)
                self._native[name] = self._open(green_context if self._green else context, name, kind)
                setattr(self, name, self._native[name])
            self._hb_endpoint = heartbeat.run_on_socket(lambda sock: self._bind(sock, "hb"))
        except zmq.ZMQError:
            for sock in self._native.values():  # a refused kernel leaves nothing open
                sock.close(linger=0)
            raise
        #: when the sockets were bound (time.monotonic())
        self.bound_at = time.monotonic()

    def _open(self, context, name, kind):
        sock = context.socket(kind)
        # A socket must not hold the process open on exit waiting for a
        # vanished peer; 1 s is enough to deliver the last replies.
        sock.linger = 1000
        if kind == zmq.ROUTER:
            # Accept a reconnecting client under the same identity
            # (e.g. a notebook server restarting its channels).
            sock.router_handover = 1
        elif kind == zmq.XPUB:
            # Report every subscription and unsubscription, not only the
            # first and last per topic: each new client gets its own
            # iopub_welcome, and the kernel can count its clients.
            sock.xpub_verboser = 1
            # A subscriber that stops reading gets at most this many
            # messages queued; beyond, zmq drops them for it alone.
            sock.sndhwm = self._iopub_hwm
        try:
            self._bind(sock, name)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        return sock

    def _bind(self, sock, name):
        if self.curve is not None:
            sock.curve_publickey, sock.curve_secretkey = self.curve
            sock.curve_server = True
        elif zmq.has("curve"):
            sock.curve_server = False  # (on the shared heartbeat socket: after an encrypted kernel's bind)
        key = f"{name}_port"
        transport, ip = self.info["transport"], self.info["ip"]
        port = int(self.info.get(key) or 0)
        if port:
            sock.bind(_endpoint(transport, ip, port))
        elif transport == "tcp":
            self.info[key] = sock.bind_to_random_port(f"tcp://{ip}")
        else:
            # ipc: pick the first free numbered path, as jupyter_client does.
            port = 1
            while os.path.exists(f"{ip}-{port}"):
                port += 1
            sock.bind(_endpoint(transport, ip, port))
            self.info[key] = port
        return _endpoint(transport, ip, self.info[key])

    def green(self):
        """Switch the channel sockets to ``zmq.green`` shadows; call after monkey-patching.

        For the early-bound sockets of a kernel that lives as long as its
        process; the native objects stay referenced until the end.
        """
        import zmq.green

        if self._green:
            return
        for name, sock in self._native.items():
            setattr(self, name, zmq.green.Socket.shadow(sock.underlying))

    def forget(self):
        """In a forked child: never touch the sockets again, they belong to the parent.

        A ``zmq.green`` socket keeps a hub watcher on its notification fd,
        which a child shares with the parent; left running, the child's hub
        would call into the parent's libzmq state. And the greenlets waiting
        on a socket, once ended, ask it for its state on their way out: in a
        forked child libzmq answers that with EINTR, which pyzmq retries
        forever -- the child would spin at 100% CPU instead of running its
        code. There is no public way to stop either, hence the private names
        (``zmq.green.Socket``'s watcher and name-mangled state callback).
        """
        for name in self._native:
            sock = getattr(self, name)
            watcher = getattr(sock, "_state_event", None)
            if watcher is not None:
                watcher.stop()
            sock._Socket__state_changed = _ignore

    def close(self):
        """Close the channel sockets, give up the heartbeat endpoint, and remove ipc socket files."""
        for name in self._native:
            getattr(self, name).close()
        try:
            self._heartbeat.run_on_socket(lambda sock: sock.unbind(self._hb_endpoint))
        except (zmq.ZMQError, RuntimeError):
            pass  # the heartbeat already stopped (the process is ending)
        if self.info["transport"] == "ipc":
            # libzmq leaves them behind.
            for name in (*CHANNELS, "hb"):
                try:
                    os.remove(f"{self.info['ip']}-{self.info[f'{name}_port']}")
                except OSError:
                    pass
