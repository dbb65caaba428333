"""Binding a kernel's five channels from connection info.

Shell, control and stdin are ROUTER sockets and IOPub a PUB socket, all from
``zmq.green`` so that waiting on them yields to the hub. The heartbeat socket
is native: it is handed to the heartbeat thread (see :mod:`gkernel.heartbeat`).

Ports given as 0 are chosen here by binding to a random port, and the chosen
ones are written back into the connection info, so a connection file written
afterwards never names a port someone else grabbed in between.

This module knows nothing about what travels on the sockets.
"""

import zmq
import zmq.green

__all__ = ["CHANNELS", "Transport"]

#: Channel name -> socket type. The heartbeat is listed last on purpose: it is
#: bound as a native socket, the others as green ones.
CHANNELS = {
    "shell": zmq.ROUTER,
    "control": zmq.ROUTER,
    "stdin": zmq.ROUTER,
    "iopub": zmq.PUB,
    "hb": zmq.ROUTER,
}


def _endpoint(transport, ip, port):
    if transport == "tcp":
        return f"tcp://{ip}:{port}"
    return f"{transport}://{ip}-{port}"


class Transport:
    """The bound sockets of one kernel.

    ``info`` is a connection-info dict (``transport``, ``ip``, ``*_port``);
    ports that are 0 are filled in. Socket attributes: ``shell``, ``control``,
    ``stdin``, ``iopub`` (green) and ``hb`` (native, owned by the heartbeat).
    """

    def __init__(self, context, info):
        self.context = context
        self.info = info
        native = zmq.Context.shadow(context.underlying)
        self._sockets = []
        for name, kind in CHANNELS.items():
            ctx = native if name == "hb" else context
            sock = ctx.socket(kind)
            # A socket must not hold the process open on exit waiting for a
            # vanished peer; 1 s is enough to deliver the last replies.
            sock.linger = 1000
            if kind == zmq.ROUTER:
                # Accept a reconnecting client under the same identity
                # (e.g. a notebook server restarting its channels).
                sock.router_handover = 1
            self._bind(sock, name)
            setattr(self, name, sock)
            self._sockets.append(sock)

    def _bind(self, sock, name):
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
            while True:
                try:
                    sock.bind(_endpoint(transport, ip, port))
                    break
                except zmq.ZMQError:
                    port += 1
            self.info[key] = port

    def close(self):
        """Close the green sockets (the heartbeat closes its own)."""
        for sock in self._sockets:
            if sock is not self.hb:
                sock.close()
