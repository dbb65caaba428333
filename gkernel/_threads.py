"""Which OS thread is this? Answered with the unpatched ``_thread.get_ident``.

After ``gevent.monkey.patch_all()`` the ``threading``/``_thread`` identity
functions answer per greenlet; code that must know whether it runs in the
hub's OS thread (to hand work over with ``loop.run_callback_threadsafe``
otherwise) asks the original.
"""

from gevent.monkey import get_original

__all__ = ["os_thread_ident", "hub_thread_check", "import_in_thread"]

os_thread_ident = get_original("_thread", "get_ident")


def hub_thread_check():
    """A callable answering whether it is called in the OS thread that made it."""
    ident = os_thread_ident()
    return lambda: os_thread_ident() == ident


def import_in_thread(module):
    """Import *module* in a short-lived OS thread; the calling greenlet waits, the hub serves.

    For an import that takes longer than everything else a kernel does at
    start (IPython's): it holds the GIL in slices, so requests are answered
    meanwhile. The thread ends with the import.
    """
    import importlib

    from gevent.threadpool import ThreadPool

    pool = ThreadPool(1)
    try:
        pool.apply(importlib.import_module, (module,))
    finally:
        pool.kill()
