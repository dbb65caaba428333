"""Run a notebook with nbclient on the gkernel kernelspec and print every cell and its outputs.

Usage: run_notebook.py NOTEBOOK [--kernel NAME] [--copies N]   (used by scripts/demo)

With --copies, N copies run at once, each in its own kernel; the cells of the
first are printed, and a line per copy.
"""

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import nbformat
from nbclient import NotebookClient


def show(cell, index):
    print(f"\n[{index}] " + "\n    ".join(cell.source.splitlines()))
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            text = out.text
        elif out.output_type == "error":
            text = f"{out.ename}: {out.evalue}"
        else:
            rich = sorted(k for k in out.data if k != "text/plain")
            text = out.data.get("text/plain", "") + (f"   (also: {', '.join(rich)})" if rich else "")
        print("  -> " + "\n     ".join(text.rstrip("\n").splitlines()))


def run(path, kernel):
    """Execute one copy; return (notebook, seconds, number of error outputs)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=kernel, timeout=60).execute()
    errors = sum(out.output_type == "error" for c in nb.cells if c.cell_type == "code" for out in c.outputs)
    return nb, time.perf_counter() - start, errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--kernel", default="gkernel", help="kernelspec name (default: gkernel)")
    parser.add_argument("--copies", type=int, default=1, help="copies to run at once, one kernel each")
    args = parser.parse_args()
    start = time.perf_counter()
    with ThreadPoolExecutor(args.copies) as pool:
        runs = list(pool.map(lambda _: run(args.notebook, args.kernel), range(args.copies)))
    code = [c for c in runs[0][0].cells if c.cell_type == "code"]
    for index, cell in enumerate(code, 1):
        show(cell, index)
    print()
    for copy, (_, seconds, errors) in enumerate(runs, 1):
        print(f"copy {copy}: {len(code)} cells run on kernel {args.kernel!r} in {seconds:.2f}s, {errors} errors")
    if args.copies > 1:
        print(f"{args.copies} copies at once in {time.perf_counter() - start:.2f}s")
    return 1 if any(errors for _, _, errors in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
