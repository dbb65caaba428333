"""Run a notebook with nbclient on the gkernel kernelspec and print every cell and its outputs.

Usage: run_notebook.py NOTEBOOK [--kernel NAME]   (used by scripts/demo)
"""

import argparse
import sys
import time

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--kernel", default="gkernel", help="kernelspec name (default: gkernel)")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, kernel_name=args.kernel, timeout=60).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for index, cell in enumerate(code, 1):
        show(cell, index)
    errors = sum(out.output_type == "error" for c in code for out in c.outputs)
    print(f"\n{len(code)} cells run on kernel {args.kernel!r} in {time.perf_counter() - start:.2f}s, "
          f"{errors} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
