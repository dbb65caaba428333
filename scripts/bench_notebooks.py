"""Executing many small notebooks: ``gkernel run --parallel`` vs nbclient, sequentially and from threads.

Each runner is a subprocess given the same notebooks and kernel; its wall time
is measured from outside, and its peak RSS is that of the runner and all its
kernel processes together, sampled every 20 ms from /proc.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

__all__ = ["notebook_figures", "notebook_table"]

CELLS = [
    "import math\nvalues = [math.sqrt(n) for n in range(10000)]",
    "for n in range(10):\n    print('line', n)",
    "from IPython.display import HTML, display\ndisplay(HTML(f'<b>{len(values)}</b>'))",
    "sum(values)",
]

NBCLIENT = """
import sys, nbformat
from concurrent.futures import ThreadPoolExecutor
from nbclient import NotebookClient
kernel, threads, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def run(path):
    NotebookClient(nbformat.read(path, as_version=4), kernel_name=kernel, timeout=60).execute()
if threads > 1:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, paths))
else:
    for path in paths:
        run(path)
"""


def _tree_rss_mb(root):
    """RSS of ``root`` and its descendants, in MB."""
    children, rss = {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/status") as f:
                rss[int(pid)] = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total / 1024


def _measure(cmd):
    """Run ``cmd``; return (wall seconds, peak RSS in MB of it and its children)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    return wall, peak[0]


def notebook_figures(kernels, count, parallel):
    """``{kernel label: {runner: (wall, peak)}}`` for ``count`` small notebooks."""
    python, gkernel = sys.executable, os.path.join(os.path.dirname(sys.executable), "gkernel")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="gkernel-bench-") as tmp:
        paths = []
        for n in range(count):
            paths.append(os.path.join(tmp, f"nb{n}.ipynb"))
            nbformat.write(new_notebook(cells=[new_code_cell(source) for source in CELLS]), paths[-1])
        for label, spec in kernels.items():
            print(f"  {count} notebooks on {label}...", file=sys.stderr)
            figures[label] = {
                f"gkernel run --parallel {parallel}": _measure(
                    [gkernel, "run", "--kernel", spec, "--parallel", str(parallel), *paths]),
                "nbclient, one after another": _measure([python, "-c", NBCLIENT, spec, "1", *paths]),
                f"nbclient, {parallel} threads": _measure([python, "-c", NBCLIENT, spec, str(parallel), *paths]),
            }
    return figures


def notebook_table(figures, count):
    print(f"Executing {count} small notebooks (4 cells each), each in a fresh kernel\n")
    print("| kernel | runner | wall time | notebooks/s | peak RSS (runner + kernels) | wall vs gkernel run |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for label, runs in figures.items():
        reference = next(iter(runs.values()))[0]
        for runner, (wall, peak) in runs.items():
            print(f"| {label} | {runner} | {wall:.1f} s | {count / wall:.1f} | {peak:,.0f} MB | "
                  f"{wall / reference:.2f}x |")
    print()
