"""The tour notebook, executed by nbclient through the gkernel kernelspec."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import KERNEL_NAME

pytestmark = pytest.mark.timeout(120)

TOUR = os.path.join(os.path.dirname(__file__), "..", "examples", "tour.ipynb")


def text_of(cell):
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data["text/plain"])
    return "".join(parts)


def test_tour_notebook_runs_with_nbclient():
    nb = nbformat.read(TOUR, as_version=4)
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=60).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(out.output_type != "error" for c in code for out in c.outputs)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert text_of(code[0]) == "monkey-patched: True True\n"
    assert text_of(code[1]) == "True"
    assert text_of(code[2]) == "ticks while this cell slept: True\n"
    assert text_of(code[3]) == "serving on port True\n"
    assert text_of(code[4]) == "[b'HELLO', b'GEVENT']"
    assert text_of(code[5]) == "328350 in under a second\n"
    badge, result = code[6].outputs
    assert badge.output_type == "display_data" and badge.data["text/html"] == "<b>gkernel</b>"
    assert result.data["text/plain"] == "{'kernel': 'gkernel', 'runtime': 'gevent'}"
