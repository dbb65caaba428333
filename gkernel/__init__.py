"""gkernel: a Jupyter kernel for Python whose whole runtime is gevent.

Importing this package is cheap and imports neither zmq nor jupyter_client:
the kernel must be able to call ``gevent.monkey.patch_all()`` before those
modules (and the ``ssl`` they pull in) are loaded.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
