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


def _host_cpu_times():
    """(busy, total) CPU jiffies of the whole host, from the first line of /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


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
    """CPU percentages since the previous request (as psutil's cpu_percent), memory, host figures."""

    def __init__(self):
        self._last = (time.monotonic(), _cpu_seconds(), _host_cpu_times())

    def reply_content(self):
        now, cpu, host = time.monotonic(), _cpu_seconds(), _host_cpu_times()
        then, cpu_then, host_then = self._last
        self._last = (now, cpu, host)
        elapsed = now - then
        host_busy, host_total = host[0] - host_then[0], host[1] - host_then[1]
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "kernel_cpu": round(100.0 * (cpu - cpu_then) / elapsed, 1) if elapsed > 0 else 0.0,
            "kernel_memory": _rss_bytes(),
            "cpu_count": os.cpu_count(),
            "host_cpu_percent": round(100.0 * host_busy / host_total, 1) if host_total > 0 else 0.0,
            "host_virtual_memory": _host_memory(),
        }
