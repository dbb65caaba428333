"""Raising the per-process limits that hundreds of kernels or clients outgrow."""

import resource

__all__ = ["MAX_SOCKETS", "raise_limits"]

#: libzmq's default is 1023 sockets per context: about 140 hosted kernels, or 150 green clients.
MAX_SOCKETS = 1 << 16


def raise_limits(context, log):
    """Lift ``context``'s socket limit (effective only before its first socket) and RLIMIT_NOFILE to the hard limit."""
    context.max_sockets = MAX_SOCKETS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.info("up to %d sockets, %d open files", context.max_sockets, hard)
