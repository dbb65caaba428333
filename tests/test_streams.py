"""sys.stdout / sys.stderr in cells: the file API, isatty and echo options, message hooks."""

import pytest

from conftest import execute, outputs, result_of, start_kernel, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(60)


def test_text_file_api(kc):
    assert result_of(kc, "import sys, io\n"
                        "o = sys.stdout\n"
                        "(o.writable(), o.readable(), o.seekable(), o.closed, o.encoding, o.isatty())") == \
        "(True, False, False, False, 'utf-8', False)"
    reply, _ = execute(kc, "sys.stdout.write(b'bytes')")
    assert reply["content"]["ename"] == "TypeError"
    assert "must be str, not bytes" in reply["content"]["evalue"]
    _, msgs = execute(kc, "n = sys.stdout.write('abc')\nsys.stdout.writelines(['d', 'e\\n'])\n"
                          "print('f', flush=True)\nprint(n)")
    assert stdout_of(msgs) == "abcde\nf\n3\n"


def test_hooks_transform_and_swallow(kc):
    _, msgs = execute(kc, """
import sys
def shout(msg):
    msg["content"]["text"] = msg["content"]["text"].upper()
    return msg
sys.stdout.register_hook(shout)
print("quiet words")
sys.stdout.flush()
removed = sys.stdout.unregister_hook(shout)
print("normal again", removed, sys.stdout.unregister_hook(shout))
""")
    assert [c["text"] for c in outputs(msgs, "stream", "stdout")] == ["QUIET WORDS\n", "normal again True False\n"]
    _, msgs = execute(kc, """
swallowed = []
def swallow(msg):
    swallowed.append(msg["content"]["text"])
    return None
sys.stderr.register_hook(swallow)
print("gone", file=sys.stderr)
sys.stderr.flush()
sys.stderr.unregister_hook(swallow)
print(swallowed)
""")
    assert not outputs(msgs, "stream", "stderr")
    assert stdout_of(msgs) == "['gone\\n']\n"


def test_isatty_and_echo_options(tmp_path):
    log = tmp_path / "kernel-stdout.txt"
    with open(log, "w") as out:
        km, kc = start_kernel("--GKernelApp.isatty=True", "--GKernelApp.echo=True", stdout=out)
        try:
            assert result_of(kc, "import sys\n(sys.stdout.isatty(), sys.stderr.isatty())") == "(True, True)"
            _, msgs = execute(kc, "print('echoed line')")
            assert stdout_of(msgs) == "echoed line\n"  # still reaches the cell
        finally:
            stop_kernel(km, kc)
    assert "echoed line\n" in log.read_text()
