"""What the green client raises when a kernel does not answer as it should.

Each error also derives from the exception jupyter_client raises in the same
situation, so code written for BlockingKernelClient still catches it.
"""

import queue

__all__ = ["ConnectionFileError", "KernelDiedError", "KernelTimeoutError", "ProvisionerError", "RequestError"]


class KernelTimeoutError(TimeoutError, queue.Empty):
    """No message, reply or readiness within the timeout given.

    A ``TimeoutError`` (what jupyter_client's ``execute_interactive`` and
    ``reply=True`` raise) and a ``queue.Empty`` (what its ``get_*_msg`` raise).
    """


class KernelDiedError(RuntimeError):
    """The kernel process ended, or its heartbeat stopped, while a reply was awaited."""


class ConnectionFileError(ValueError):
    """A connection file cannot be read, is not JSON, or lacks a channel's port."""


class ProvisionerError(RuntimeError):
    """The kernelspec's provisioner waits on an asyncio loop, which a thread-free manager has not got."""


class RequestError(RuntimeError):
    """The kernel answered a request with an error reply (an unknown subshell, say); ``content`` is the reply's."""

    def __init__(self, content):
        super().__init__(f"{content.get('ename', 'error')}: {content.get('evalue', '')}")
        self.content = content
