"""``jupyter console --kernel gkernel``, typed into as a person would, in a real terminal (tmux)."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import KERNEL_NAME

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"),
]

JUPYTER = os.path.join(os.path.dirname(sys.executable), "jupyter")


class Terminal:
    """A tmux server of our own (it inherits this process's Jupyter environment) with one pane."""

    def __init__(self, command):
        self.socket = f"gkernel-test-{os.getpid()}"
        self.tmux("new-session", "-d", "-s", "console", "-x", "120", "-y", "50", command)

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True).stdout

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "console", "-S", "-200")

    def type(self, *keys):
        self.tmux("send-keys", "-t", "console", *keys)

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def alive(self):
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "console"],
                              capture_output=True).returncode == 0

    def close(self):
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def test_console_runs_a_multiline_def_typed_line_by_line():
    term = Terminal(f"{JUPYTER} console --kernel {KERNEL_NAME}")
    try:
        term.wait_for("In [1]:")
        term.type("def f():", "Enter")
        term.wait_for("...:")
        term.type("return 42", "Enter")  # the console indents the body itself
        time.sleep(0.5)
        term.type("Enter")  # an empty line ends the block, as at the IPython prompt
        term.wait_for("In [2]:")
        term.type("f()", "Enter")
        screen = term.wait_for("Out[2]: 42")
        assert "    return 42" in screen
        term.type("exit", "Enter")
        deadline = time.monotonic() + 15
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not term.alive(), "exit did not end the console"
    finally:
        term.close()
