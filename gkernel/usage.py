"""Resource figures for ``usage_request``, read from the standard library and /proc.

The reply follows what the reference kernel reports (through psutil) so that
front-end resource indicators work, without making psutil a dependency.
"""

import os
import resource
import socket
import time

__all__ = ["UsageMeter"]


def _cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _host_memory():
    fields = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                fields[key] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    total, available = fields.get("MemTotal", 0), fields.get("MemAvailable", 0)
    return {
        "total": total,
        "available": available,
        "used": total - available,
        "free": fields.get("MemFree", 0),
        "percent": round(100.0 * (total - available) / total, 1) if total else 0.0,
    }


class UsageMeter:
    """CPU percentage since the previous request, memory, host figures."""

    def __init__(self):
        self._last = (time.monotonic(), _cpu_seconds())

    def reply_content(self):
        now, cpu = time.monotonic(), _cpu_seconds()
        then, cpu_then = self._last
        self._last = (now, cpu)
        elapsed = now - then
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "kernel_cpu": round(100.0 * (cpu - cpu_then) / elapsed, 1) if elapsed > 0 else 0.0,
            "kernel_memory": _rss_bytes(),
            "cpu_count": os.cpu_count(),
            "host_cpu_percent": round(100.0 * os.getloadavg()[0] / (os.cpu_count() or 1), 1),
            "host_virtual_memory": _host_memory(),
        }
