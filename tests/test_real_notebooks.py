"""Notebooks written by others, run with nbclient under gkernel and under ipykernel.

The notebooks are the test notebooks that nbclient, nbconvert and papermill
ship in their source distributions (all BSD-3-Clause), taken from PyPI at
pinned releases (:func:`conftest.sdist`): they use magics, matplotlib, rich
display, display updates, errors, stdin, unicode, comms, ipywidgets and ``sys.exit``.
Each runs with ``allow_errors`` in a fresh kernel of each kind, in a copy of
its own folder. The rule: every cell that succeeds under ipykernel succeeds
under gkernel, with the same output types (stream names, mime types, error
names), and the widget state nbclient saves is the same.
"""

import json
import pathlib
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import KERNEL_NAME, sdist

pytestmark = pytest.mark.timeout(600)

#: (package, release, folder of notebooks in its sdist)
SOURCES = [
    ("nbclient", "0.11.0", "tests/files/"),
    ("nbconvert", "7.17.2", "tests/files/"),
    ("papermill", "2.7.0", "papermill/tests/notebooks/"),
]

LEFT_OUT = {
    "notebook_jl.ipynb": "a Julia notebook",
    "notimplemented_translator.ipynb": "an R notebook",
    "Autokill.ipynb": "kills its own kernel process: a test of nbclient's restart, not of a kernel",
    "Interrupt.ipynb": "waits for nbclient's timeout to interrupt it: a test of nbclient",
    "Sleep1s.ipynb": "nbclient's timing test; it only sleeps",
    "Parallel Execute A.ipynb": "waits for a file Parallel Execute B writes when both run at once",
    "Parallel Execute B.ipynb": "the other half of that pair",
    "keyboard_interrupt.ipynb": "sleeps 60 s for papermill to interrupt it",
    "Check History in Memory.ipynb": "checks that nbclient passed --HistoryManager.hist_file=:memory:, which "
                                     "nbclient does only for kernels named python*",
}


def notebooks():
    for package, release, folder in SOURCES:
        root = pathlib.Path(sdist(package, [folder], release=release))
        for path in sorted((root / folder).glob("*.ipynb")):
            if path.name not in LEFT_OUT:
                yield pytest.param(path, id=f"{package}/{path.name}")


def signature(cell):
    """What a cell produced, without its text: whether it failed and the types of its outputs."""
    kinds = []
    for output in cell.get("outputs", []):
        kind = output["output_type"]
        if kind == "stream":
            if kinds[-1:] != [("stream", output["name"])]:  # how a stream is cut in messages is timing
                kinds.append(("stream", output["name"]))
        elif kind == "error":
            kinds.append(("error", output["ename"]))
        else:
            kinds.append((kind, tuple(sorted(output.get("data", {})))))
    failed = any(kind == "error" for kind, _ in kinds)
    return failed, kinds


def widget_state(nb):
    """The widget state nbclient saved, with model ids and traceback text left out (an Output
    widget's tracebacks show other lines of context): sorted (model name, state) pairs."""
    def anonymous(value):
        if isinstance(value, str) and value.startswith("IPY_MODEL_"):
            return "IPY_MODEL_"
        if isinstance(value, list):
            return [anonymous(item) for item in value]
        if isinstance(value, dict):
            return {key: "..." if key == "traceback" else anonymous(item) for key, item in value.items()}
        return value

    models = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    return sorted(json.dumps([model["model_name"], anonymous(model["state"])], sort_keys=True)
                  for model in models.values())


def run(path, kernel_name, workdir):
    shutil.copytree(path.parent, workdir)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name=kernel_name, timeout=60, allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return [signature(cell) for cell in nb.cells if cell.cell_type == "code"], widget_state(nb)


@pytest.mark.parametrize("path", list(notebooks()))
def test_cells_that_work_under_ipykernel_work_under_gkernel(path, tmp_path):
    reference, reference_widgets = run(path, "python3", tmp_path / "ipykernel")
    ours, our_widgets = run(path, KERNEL_NAME, tmp_path / "gkernel")
    differences = [(n, theirs, mine) for n, (theirs, mine) in enumerate(zip(reference, ours))
                   if not theirs[0] and theirs != mine]
    assert not differences, "cells (index, ipykernel, gkernel) that differ: " + repr(differences)
    # Notebooks with widgets: nbclient saved the same models with the same state.
    assert our_widgets == reference_widgets
