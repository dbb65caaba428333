"""``gkernel run`` executes real notebooks in real kernels: outputs as nbclient records them, parallel runs, failures."""

import os
import re
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import GKERNEL, KERNEL_NAME

pytestmark = pytest.mark.timeout(120)

FEATURES = [
    "print('one')\nprint('two')\nimport sys; print('warn', file=sys.stderr)\n6 * 7",
    "from IPython.display import display, HTML, clear_output\n"
    "handle = display(HTML('<b>first</b>'), display_id='shown')\ndisplay('kept')",
    "handle.update(HTML('<b>updated</b>'))",
    "print('gone')\nclear_output(wait=True)\nprint('stays')",
    "",
    "1 / 0",
    "print('tagged to skip')",
    "len('after the error')",
]


def features_notebook():
    cells = [new_markdown_cell("# features")] + [new_code_cell(source) for source in FEATURES]
    cells[6].metadata["tags"] = ["raises-exception"]
    cells[7].metadata["tags"] = ["skip-execution"]
    return new_notebook(cells=cells)


def run(*args, cwd):
    return subprocess.run([GKERNEL, "run", *args], cwd=cwd, capture_output=True, text=True, timeout=100)


def write(path, nb):
    nbformat.write(nb, str(path))
    return str(path)


def recorded(nb):
    """What a notebook holds after a run: per code cell, its count and outputs."""
    return [(cell.execution_count, cell.outputs) for cell in nb.cells if cell.cell_type == "code"]


def streams_apart(cells):
    """*cells* (as :func:`recorded`) with each cell's stream text per stream name, apart from its other outputs."""
    def texts(outs):
        return {name: "".join(o.text for o in outs if o.output_type == "stream" and o.name == name)
                for name in ("stdout", "stderr")}

    return [(count, texts(outs), [o for o in outs if o.output_type != "stream"]) for count, outs in cells]


@pytest.mark.parametrize("kernel_name", [KERNEL_NAME, "python3"])
def test_outputs_match_nbclient(tmp_path, kernel_name):
    """Streams merged, stderr, results, display updates, clear_output, tags, errors: as nbclient records them."""
    source = write(tmp_path / "features.ipynb", features_notebook())
    done = run(source, "--kernel", kernel_name, "--output", "ran.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = nbformat.read(str(tmp_path / "ran.ipynb"), as_version=4)

    theirs = features_notebook()
    NotebookClient(theirs, kernel_name=kernel_name, timeout=60).execute()
    if kernel_name == KERNEL_NAME:
        assert recorded(ours) == recorded(theirs)
    else:  # ipykernel flushes stdout and stderr from buffers of their own: their order is timing
        assert streams_apart(recorded(ours)) == streams_apart(recorded(theirs))

    cells = recorded(ours)
    assert sorted(o.get("name") or o.output_type for o in cells[0][1]) == ["execute_result", "stderr", "stdout"]
    if kernel_name == KERNEL_NAME:
        assert [o.get("name") or o.output_type for o in cells[0][1]] == ["stdout", "stderr", "execute_result"]
    assert cells[0][1][0].text == "one\ntwo\n"
    assert cells[1][1][0].data["text/html"] == "<b>updated</b>"
    assert [o.text for o in cells[3][1]] == ["stays\n"]
    assert cells[4] == (None, [])
    assert cells[5][1][0].ename == "ZeroDivisionError"
    assert cells[6] == (None, [])
    assert ours.metadata.language_info.name == "python"


def test_widget_state_is_saved_as_nbclient_saves_it(tmp_path):
    from test_real_notebooks import widget_state

    def widgets_notebook():
        return new_notebook(cells=[new_code_cell(source) for source in (
            "import ipywidgets as w\nslider = w.IntSlider(value=3, description='n')\nslider",
            "slider.value = 42\nw.HBox([w.Text('hi'), w.Checkbox(True)])",
        )])

    source = write(tmp_path / "widgets.ipynb", widgets_notebook())
    done = run(source, "--kernel", KERNEL_NAME, "--output", "ran.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ours = nbformat.read(str(tmp_path / "ran.ipynb"), as_version=4)
    theirs = widgets_notebook()
    NotebookClient(theirs, kernel_name="python3", timeout=60).execute()
    assert widget_state(ours) == widget_state(theirs)
    states = ours.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"].values()
    assert any(m["model_name"] == "IntSliderModel" and m["state"]["value"] == 42 for m in states)


def test_parallel_runs_overlap_and_stay_apart(tmp_path):
    """Six notebooks, three at a time: each records only its own output, and at most three run at once."""
    sources = []
    for n in range(6):
        cells = [new_code_cell(f"import time\nstart = time.time()\ntime.sleep(1)\nprint('notebook {n}')"),
                 new_code_cell("print(start, time.time())")]
        sources.append(write(tmp_path / f"nb{n}.ipynb", new_notebook(cells=cells)))
    done = run(*sources, "--kernel", KERNEL_NAME, "--parallel", "3", "--output", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    spans = []
    for n in range(6):
        nb = nbformat.read(str(tmp_path / "out" / f"nb{n}.ipynb"), as_version=4)
        assert nb.cells[0].outputs[0].text == f"notebook {n}\n"
        start, end = map(float, nb.cells[1].outputs[0].text.split())
        spans.append((start, end))
        assert f"nb{n}.ipynb [1/2] ok" in done.stderr and f"nb{n}.ipynb [2/2] ok" in done.stderr
    most_at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert 2 <= most_at_once <= 3
    assert "6 notebooks in" in done.stderr and "6 ok, 0 failed" in done.stderr


def failing_notebook():
    return new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("1 / 0"), new_code_cell("print('after')")])


def test_failing_cell_stops_the_notebook(tmp_path):
    source = write(tmp_path / "fails.ipynb", failing_notebook())
    done = run(source, "--kernel", KERNEL_NAME, "--output", "ran.ipynb", cwd=tmp_path)
    assert done.returncode == 1
    assert re.search(r"fails.ipynb \[2/3\] ZeroDivisionError: division by zero [\d.]+s\n", done.stderr)
    assert "FAILED (cell [2/3] raised ZeroDivisionError: division by zero)" in done.stderr
    assert "0 ok, 1 failed" in done.stderr
    cells = recorded(nbformat.read(str(tmp_path / "ran.ipynb"), as_version=4))
    assert cells[1][1][0].output_type == "error" and cells[1][1][0].ename == "ZeroDivisionError"
    assert cells[2] == (None, [])  # never ran


def test_allow_errors_runs_on(tmp_path):
    source = write(tmp_path / "fails.ipynb", failing_notebook())
    done = run(source, "--kernel", KERNEL_NAME, "--allow-errors", "--inplace", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ZeroDivisionError: division by zero" in done.stderr and "(allowed)" in done.stderr
    cells = recorded(nbformat.read(source, as_version=4))
    assert cells[2][0] == 3 and cells[2][1][0].text == "after\n"


def test_timeout_interrupts_the_cell(tmp_path):
    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(60)"), new_code_cell("print('never')")])
    source = write(tmp_path / "slow.ipynb", nb)
    started = time.monotonic()
    done = run(source, "--kernel", KERNEL_NAME, "--timeout", "1", "--output", "ran.ipynb", cwd=tmp_path)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert "slow.ipynb [1/2] timed out after 1.0s" in done.stderr
    cells = recorded(nbformat.read(str(tmp_path / "ran.ipynb"), as_version=4))
    assert cells[0][1][-1].ename == "KeyboardInterrupt"  # where it was stuck, as the kernel reported it
    assert cells[1] == (None, [])


def test_bad_notebooks_fail_alone(tmp_path):
    good = write(tmp_path / "good.ipynb", new_notebook(cells=[new_code_cell("print('fine')")]))
    (tmp_path / "broken.ipynb").write_text("{not json")
    odd_kernel = new_notebook(cells=[new_code_cell("1")])
    odd_kernel.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "x", "language": "python"}
    odd = write(tmp_path / "odd.ipynb", odd_kernel)
    done = run("missing.ipynb", "broken.ipynb", odd, good, "--parallel", "4", cwd=tmp_path)
    assert done.returncode == 1
    assert "missing.ipynb cannot be read: No such file or directory" in done.stderr
    assert "broken.ipynb is not a notebook:" in done.stderr
    assert "no kernel named 'no-such-kernel'" in done.stderr
    assert "good.ipynb [1/1] ok" in done.stderr and "1 ok, 3 failed" in done.stderr


@pytest.mark.parametrize("args, message", [
    ([], "give one or more notebooks"),
    (["a.ipynb", "--inplace", "--output", "x.ipynb"], "--output and --inplace exclude each other"),
    (["a/n.ipynb", "b/n.ipynb", "--output", "out"], "two notebooks would be saved as out/n.ipynb"),
])
def test_usage_errors(tmp_path, args, message):
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_what_a_run_imports(tmp_path):
    # nbformat only once a notebook is read, and then without rfc3987-syntax, installed here with
    # jupyter_server, whose import took 3 s (gkernel.runapp._nbformat).
    def imports(*args):
        done = subprocess.run([sys.executable, "-X", "importtime", GKERNEL, "run", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=100)
        return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}

    assert "lark" in subprocess.run([sys.executable, "-c", "import rfc3987_syntax, sys; print(*sys.modules)"],
                                    capture_output=True, text=True, timeout=60).stdout.split()
    assert "nbformat" not in imports()
    notebook = write(tmp_path / "n.ipynb", new_notebook(cells=[new_code_cell("1 + 1")]))
    ran = imports(notebook, "--kernel", KERNEL_NAME)
    assert "nbformat" in ran and "jsonschema" in ran and "lark" not in ran  # rfc3987-syntax's parser


def test_help_explains():
    done = subprocess.run([GKERNEL, "run", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for option in ("--kernel", "--output", "--inplace", "--timeout", "--parallel", "--allow-errors"):
        assert option in done.stdout
    assert os.path.basename(GKERNEL) in subprocess.run([GKERNEL, "--help"], capture_output=True,
                                                       text=True, timeout=30).stdout
