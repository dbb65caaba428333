"""ipykernel's own wire-level tests, unchanged, run against gkernel.

ipykernel's ``tests/test_message_spec.py``, ``tests/test_kernel.py``,
``tests/test_subshells.py`` and ``tests/test_debugger.py`` start their kernels through jupyter_client's
default kernelspec, ``python3``. This module takes them from the source
distribution of the ipykernel installed here (:func:`conftest.sdist`) and
runs them in pytest subprocesses (side by side) whose ``JUPYTER_PATH`` puts first a
kernelspec named ``python3`` that starts gkernel (the subshell and debugger
tests also against one that starts gkernel-serve kernels). Nothing in ipykernel's files
is changed.

The tests left out, and why, are in ``LEFT_OUT``.
"""

import os
import subprocess
import sys
import time

import pytest

from conftest import GKERNEL, sdist


def stop_hosts(runtime_dir):
    """Stop the gkernel serve hosts the provisioner started in *runtime_dir*."""
    from gkernel.manage import HostClient, HostError, find_host_file

    while (path := find_host_file(runtime_dir)) is not None:
        try:
            HostClient(path, timeout=5).stop()
        except HostError:
            break

pytestmark = pytest.mark.timeout(900)

LEFT_OUT = {
    "tests/test_kernel.py::test_help_output":
        "runs `python -m IPython kernel --help-all` in the test's own Python; no kernel is started",
    "tests/test_kernel.py::test_print_to_correct_cell_from_thread[thread-local]":
        "expects a thread's output to go to the running cell after reset_thread_parent; in gkernel "
        "a thread writes to the cell that started it (README: where output goes)",
    "tests/test_kernel.py::test_print_to_correct_cell_from_thread[none]":
        "expects a thread's output to go to whichever cell is running; same design difference",
    "tests/test_kernel.py::test_parent_header_and_ident":
        "reads ipykernel's private Kernel._parent_ident",
    "tests/test_kernel.py::test_simple_print":
        "calls ipykernel's private OutStream._is_master_process on sys.stdout",
    "tests/test_kernel.py::test_subprocess_print": "same private method",
    "tests/test_kernel.py::test_subprocess_noprint": "same private method",
    "tests/test_kernel.py::test_subprocess_error": "same private method",
    "tests/test_message_spec.py::test_kernel_info_request":
        "requires implementation_version >= 2.1 (IPython's numbering)",
    "tests/test_subshells.py::test_thread_counts":
        "asserts that each subshell adds an OS thread; gkernel's subshells are greenlets, on purpose",
    "tests/test_subshells.py::test_thread_ids":
        "asserts that a subshell runs in another OS thread than the main shell; same design difference",
    "tests/test_subshells.py::test_comm_reply_follows_requesting_subshell":
        "asserts that a comm callback runs in the OS thread of the request that sent the comm's last "
        "message; gkernel serves comm messages in their own lane, beside every subshell (README: comms)",
}

#: kernelspec name: its ``gkernel install`` options.
KERNELSPECS = {"gkernel": [], "gkernel-serve": ["--serve"]}

#: Phases of (kernelspec, ipykernel's test files) groups: the groups of a phase run at once, each in a pytest
#: subprocess (the tests mostly wait for kernels, and the suite has a time budget). test_message_spec.py runs
#: alone: ``wait_for_ready`` sends another ``kernel_info_request`` each second the kernel has not answered, and
#: the module's first test validates every reply still queued against IPython's version numbering, so its kernel
#: must start without three other pytest runs competing for two cores (the CI failed once when it did not).
PHASES = [
    [("gkernel", ["tests/test_message_spec.py"])],
    [("gkernel", ["tests/test_kernel.py"]),
     ("gkernel", ["tests/test_subshells.py", "tests/test_debugger.py"]),
     ("gkernel-serve", ["tests/test_subshells.py"]),
     ("gkernel-serve", ["tests/test_debugger.py"])],
]


def start_group(directory, options, files):
    """ipykernel's *files* in a pytest subprocess whose ``python3`` kernelspec starts gkernel with *options*."""
    source = sdist("ipykernel", ["tests/", "pyproject.toml"])
    prefix = directory / "prefix"
    subprocess.run([GKERNEL, "install", "--prefix", str(prefix), "--name", "python3", *options],
                   check=True, capture_output=True)
    env = dict(os.environ, JUPYTER_PATH=str(prefix / "share" / "jupyter"))
    for var, sub in (("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                     ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
        env[var] = str(directory / sub)
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "timeout", "--timeout", "60",
               "--color=no", "-o", "asyncio_default_fixture_loop_scope=function", "-q",
               *(arg for test in LEFT_OUT for arg in ("--deselect", test)), *files]
    return subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def run_phase(phase, tmp_path, deadline):
    """Run the groups of *phase* at once, until *deadline* at most; each group's (kernelspec, files, Popen,
    (stdout, stderr))."""
    runs = []
    try:
        for kernel, files in phase:
            directory = tmp_path / f"{kernel}-{files[0].rsplit('/', 1)[-1][:-3]}"
            directory.mkdir()
            runs.append((kernel, files, directory, start_group(directory, KERNELSPECS[kernel], files)))
        outputs = [run.communicate(timeout=max(1, deadline - time.monotonic())) for *_, run in runs]
    finally:
        for *_, directory, run in runs:
            run.kill()
            stop_hosts(str(directory / "runtime"))
    return [(kernel, files, run, output) for (kernel, files, _, run), output in zip(runs, outputs)]


def test_ipykernel_wire_tests_pass_against_gkernel(tmp_path):
    deadline = time.monotonic() + 840  # within the test's own timeout, whatever the phases take
    results = [result for phase in PHASES for result in run_phase(phase, tmp_path, deadline)]
    for kernel, files, run, (stdout, stderr) in results:
        summary = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        print(kernel, files, stdout[-3000:], stderr[-2000:])
        assert run.returncode == 0, f"ipykernel's {files} failed against {kernel}: {summary}\n{stdout[-6000:]}"
        assert " passed" in summary and "failed" not in summary
