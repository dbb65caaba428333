"""The green client: drive any Jupyter kernel from a gevent program, without threads.

:class:`GreenKernelManager` starts and stops kernel processes from kernelspecs;
:class:`GreenKernelClient` talks to a kernel with BlockingKernelClient's API,
its channels greenlets on ``zmq.green``. Many of both live in one program, each
driven by its own greenlets. What they raise is in :mod:`.errors`.

Importing this package imports zmq.green and jupyter_client; call
``gevent.monkey.patch_all()`` before, if the program patches at all.
"""

from .errors import ConnectionFileError, KernelDiedError, KernelTimeoutError, ProvisionerError, RequestError
from .kernelclient import GreenKernelClient
from .manager import GreenKernelManager, start_new_kernel

__all__ = [
    "ConnectionFileError",
    "GreenKernelClient",
    "GreenKernelManager",
    "KernelDiedError",
    "KernelTimeoutError",
    "ProvisionerError",
    "RequestError",
    "start_new_kernel",
]
