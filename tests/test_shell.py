"""The IPython layer, on the wire: what a notebook user types works as under ipykernel.

Tests on the ``both`` fixture run the same code against gkernel, a gkernel
kernel hosted by ``gkernel serve`` (through the provisioner) and ipykernel
(``python3``), and assert the same messages; the others check what
gkernel adds for gevent users (cooperative ``!cmd`` and ``await``, ``%greenlets``,
tracebacks without the hub's frames).
"""

import os
import re
import time

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import KERNEL_NAME, SERVE_KERNEL_NAME, collect_iopub, execute, get_reply, outputs, plain, result_of, stdout_of, stop_kernel

pytestmark = pytest.mark.timeout(90)

KERNELS = [KERNEL_NAME, SERVE_KERNEL_NAME, "python3"]  # gkernel, in a serve host, and ipykernel


@pytest.fixture(scope="module", params=KERNELS)
def both(request, tmp_path_factory):
    """A kernel of each kind, working in a directory of its own."""
    cwd = tmp_path_factory.mktemp(request.param)
    # ipykernel stops capturing fds 1 and 2 when it sees pytest's variable: the kernels get a user's environment.
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}
    km, kc = start_new_kernel(kernel_name=request.param, startup_timeout=30, cwd=str(cwd), env=env)
    if request.param == SERVE_KERNEL_NAME:
        # A hosted kernel shares its host's working directory: move the host (this module's files go there).
        execute(kc, f"import os; os.chdir({str(cwd)!r})")
    yield kc
    stop_kernel(km, kc)


def ok(kc, code, **kwargs):
    reply, msgs = execute(kc, code, **kwargs)
    assert reply["content"]["status"] == "ok", plain("".join(reply["content"].get("traceback", [])))
    return reply, msgs


# -- IPython syntax ------------------------------------------------------------------


def test_line_and_cell_magics(both):
    kc = both
    _, msgs = ok(kc, "%time x = sum(range(10))")
    assert "Wall time" in stdout_of(msgs)
    _, msgs = ok(kc, "%%time\ny = 2")
    assert "Wall time" in stdout_of(msgs)
    _, msgs = ok(kc, "%timeit -n 3 -r 2 sum(range(10))")
    assert "per loop" in stdout_of(msgs)
    assert result_of(kc, "%pwd") == repr(os_getcwd(kc))
    ok(kc, "%env GKERNEL_TEST_VAR=42")
    assert result_of(kc, "import os; os.environ['GKERNEL_TEST_VAR']") == "'42'"
    _, msgs = ok(kc, "who_var = 1\n%who int")
    assert "who_var" in stdout_of(msgs)
    _, msgs = ok(kc, "%%writefile script.py\nprint('ran', __name__)\nresult_of_script = 7\n")
    assert "script.py" in stdout_of(msgs)
    _, msgs = ok(kc, "%run script.py")
    assert stdout_of(msgs) == "ran __main__\n"
    assert result_of(kc, "result_of_script") == "7"
    _, msgs = ok(kc, "%%capture captured\nprint('hidden')")
    assert not outputs(msgs, "stream")
    assert result_of(kc, "captured.stdout") == "'hidden\\n'"
    _, msgs = ok(kc, "%%html\n<b>bold</b>")
    assert outputs(msgs, "display_data")[0]["data"]["text/html"].strip() == "<b>bold</b>"
    _, msgs = ok(kc, "%%bash\necho from bash")
    assert stdout_of(msgs) == "from bash\n"
    _, msgs = ok(kc, "%pip --version")  # pip in the kernel's own environment, through the shell escape
    assert stdout_of(msgs).startswith("pip ")
    ok(kc, "%xmode Minimal")
    reply, msgs = execute(kc, "def deep():\n    1/0\ndeep()")
    assert len(outputs(msgs, "error")[0]["traceback"]) <= 2  # Minimal: no frames
    ok(kc, "%xmode Context")
    _, msgs = ok(kc, "%hist -l 2")
    assert "%xmode Context" in stdout_of(msgs)


def os_getcwd(kc):
    return eval(result_of(kc, "__import__('os').getcwd()"))


def test_kernel_magics(both):
    kc = both
    _, msgs = ok(kc, "%connect_info")
    assert '"shell_port"' in stdout_of(msgs)
    ok(kc, "open('paged.txt', 'w').write('paged text')")
    for magic in ("%less", "%more"):
        reply, _ = ok(kc, f"{magic} paged.txt")
        assert reply["content"]["payload"][0]["data"]["text/plain"] == "paged text"
    _, msgs = ok(kc, "import sys\nsys.stderr.write('')\nsys.stderr.flush()")
    assert not outputs(msgs, "stream")  # no empty stream message


def test_cd_and_load(both):
    kc = both
    ok(kc, "import os, tempfile\nscratch = tempfile.mkdtemp()\nhere = os.getcwd()")
    ok(kc, "%cd {scratch}")
    assert result_of(kc, "os.getcwd() == scratch") == "True"
    ok(kc, "%cd {here}")
    ok(kc, "with open('loaded.py', 'w') as f: f.write('loaded_value = 3\\n')")
    reply, _ = ok(kc, "%load loaded.py")
    payload = reply["content"]["payload"]
    assert payload[0]["source"] == "set_next_input" and "loaded_value = 3" in payload[0]["text"]


def test_load_ext_and_autoreload(both):
    kc = both
    ok(kc, "%load_ext autoreload\n%autoreload 2")
    ok(kc, "with open('reloaded_mod.py', 'w') as f: f.write('def answer(): return 1\\n')\n"
           "import reloaded_mod")
    assert result_of(kc, "reloaded_mod.answer()") == "1"
    ok(kc, "import os, time\ntime.sleep(1.1)\n"  # a newer mtime
           "with open('reloaded_mod.py', 'w') as f: f.write('def answer(): return 2\\n')")
    assert result_of(kc, "reloaded_mod.answer()") == "2"


def test_shell_escapes(both):
    kc = both
    _, msgs = ok(kc, "!echo out; echo err 1>&2")
    # One terminal for both streams, as ipykernel's pexpect gives (gkernel without its CRs).
    assert stdout_of(msgs).replace("\r\n", "\n") == "out\nerr\n"
    assert result_of(kc, "files = !printf 'a\\nb\\n'\nfiles") == "['a', 'b']"
    assert result_of(kc, "word = 'expanded'\nechoed = !echo $word\nechoed[0]") == "'expanded'"
    assert result_of(kc, "!exit 3\n_exit_code") == "3"


def test_help_anywhere(both):
    kc = both
    for code in ("len?", "?len", "x = 1\nlen?", "  len?"):
        reply, _ = ok(kc, code)
        payload = reply["content"]["payload"]
        assert payload and payload[0]["source"] == "page", code
        assert "Return the number of items" in plain(payload[0]["data"]["text/plain"]), code
    reply, _ = ok(kc, "def mine():\n    'Mine.'\n    return 1")
    reply, _ = ok(kc, "mine??")
    assert "return 1" in plain(reply["content"]["payload"][0]["data"]["text/plain"])


def test_indented_cells_and_pasted_prompts(both):
    kc = both
    assert result_of(kc, "    a = 1\n    a + 1") == "2"
    assert result_of(kc, ">>> b = 2\n>>> b * 3") == "6"
    assert result_of(kc, "In [1]: c = 4\n\nIn [2]: c + 1") == "5"


# -- the namespace and display -------------------------------------------------------------


def test_get_ipython_and_history_variables(both):
    kc = both
    assert result_of(kc, "get_ipython() is __import__('IPython').get_ipython()") == "True"
    ok(kc, "'first'")
    ok(kc, "'second'")
    ok(kc, "'third'")
    assert result_of(kc, "(_, __, ___)") == "('third', 'second', 'first')"
    n = get_reply(kc, kc.execute("'probe'"))["content"]["execution_count"]
    assert result_of(kc, f"(In[{n}], Out[{n}], _i{n}, _ih[{n}] == In[{n}], _oh is Out)") == \
        "(\"'probe'\", 'probe', \"'probe'\", True, True)"


def test_display_formatter(both):
    kc = both
    text = result_of(kc, "{'key_%02d' % i: list(range(8)) for i in range(6)}")
    assert text.count("\n") == 5  # IPython's pretty printer wraps a long dict
    _, msgs = ok(kc, "class Shows:\n"
                     "    def _ipython_display_(self):\n"
                     "        display({'text/plain': 'custom'}, raw=True)\n"
                     "Shows()")
    assert [m["msg_type"] for m in msgs] == ["execute_input", "display_data"]
    assert msgs[1]["content"]["data"] == {"text/plain": "custom"}
    _, msgs = ok(kc, "from IPython.display import Javascript\nJavascript('console.log(1)')")
    assert outputs(msgs, "execute_result")[0]["data"]["application/javascript"] == "console.log(1)"
    _, msgs = ok(kc, "from IPython.display import display, clear_output\n"
                     "h = display('one', display_id=True)\nh.update('two')\nclear_output(wait=True)")
    assert [m["msg_type"] for m in msgs] == ["execute_input", "display_data", "update_display_data",
                                             "clear_output"]
    assert msgs[1]["content"]["transient"] == msgs[2]["content"]["transient"]


def test_failing_repr_fails_the_cell(both):
    reply, msgs = execute(both, "class Bad:\n    def __repr__(self): raise ValueError('no repr')\nBad()")
    assert reply["content"]["status"] == "error"  # ipykernel names it NoneType, gkernel ValueError
    assert outputs(msgs, "error")[0]["evalue"] == "no repr"


def test_execute_request_on_control(both):
    msg = both.session.msg("execute_request", {"code": "on_control = 'ran'"})
    both.control_channel.send(msg)
    assert get_reply(both, msg["header"]["msg_id"], channel="control")["content"]["status"] == "ok"
    assert result_of(both, "on_control") == "'ran'"


def test_traceback_starts_at_the_cell(both):
    kc = both
    ok(kc, "def inner():\n    raise ValueError('bad value')")
    reply, msgs = execute(kc, "x = 1\ninner()")
    assert reply["content"]["ename"] == "ValueError"
    text = plain("\n".join(outputs(msgs, "error")[0]["traceback"]))
    assert "Cell In[" in text and "inner()" in text and "raise ValueError('bad value')" in text
    assert "interactiveshell.py" not in text and "gkernel/" not in text
    assert "\x1b[" in "".join(reply["content"]["traceback"])  # coloured, as in IPython


def test_matplotlib_inline_by_default(both):
    kc = both
    _, msgs = ok(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 2]);")
    images = [c for c in outputs(msgs, "display_data") if "image/png" in c["data"]]
    assert len(images) == 1
    _, msgs = ok(kc, "%matplotlib inline\nplt.figure(); plt.bar([1], [2]);")
    assert [c for c in outputs(msgs, "display_data") if "image/png" in c["data"]]
    ok(kc, "%matplotlib notebook")  # drawn by the front end: needs no GUI event loop
    ok(kc, "%matplotlib inline")


def test_top_level_await(both):
    kc = both
    assert result_of(kc, "import asyncio\nawait asyncio.sleep(0.01)\n'awaited'") == "'awaited'"


def test_is_complete(both):
    kc = both

    def status(code):
        return get_reply(kc, kc.is_complete(code))["content"]

    assert status("def f():\n    return 42\n\n")["status"] == "complete"
    assert status("x = 1")["status"] == "complete"
    assert status("def f():") == {"status": "incomplete", "indent": "    "}
    assert status("%time x = 1")["status"] == "complete"
    assert status("1 +* 2")["status"] == "invalid"


def test_completion(both):
    kc = both
    ok(kc, "import os\nmy_variable = 1")
    c = get_reply(kc, kc.complete("my_var"))["content"]
    assert "my_variable" in c["matches"] and (c["cursor_start"], c["cursor_end"]) == (0, 6)
    c = get_reply(kc, kc.complete("os.pa"))["content"]
    assert "path" in c["matches"] and c["cursor_start"] == 3
    c = get_reply(kc, kc.complete("%ti"))["content"]
    assert "%time" in c["matches"] and "%timeit" in c["matches"]


def test_state_carries_over_between_cells(both):
    kc = both
    ok(kc, "import contextvars, decimal\nvar = contextvars.ContextVar('var', default='unset')\n"
           "var.set('kept')\ndecimal.getcontext().prec = 5")
    assert result_of(kc, "var.get()") == "'kept'"
    assert result_of(kc, "str(decimal.Decimal(1) / 3)") == "'0.33333'"


def test_exit_without_parentheses_ends_the_kernel():
    for word in ("exit", "quit"):
        km, kc = start_new_kernel(kernel_name=KERNEL_NAME, startup_timeout=30)
        try:
            reply, _ = ok(kc, word)
            assert {"source": "ask_exit", "keepkernel": False} in reply["content"]["payload"]
            deadline = time.monotonic() + 10
            while km.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not km.is_alive()
        finally:
            kc.stop_channels()
            km.cleanup_resources()


# -- what gevent users get beyond ipykernel -------------------------------------------------


@pytest.fixture(scope="module")
def gk(kernel):
    return kernel[1]


TICKER = "import gevent\nticks = []\nticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(200)])"


def stream_arrivals(kc, msg_id):
    """(monotonic time, text) of each stream message of request *msg_id*, until it is idle; asserts it ran."""
    arrivals = []
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            arrivals.append((time.monotonic(), msg["content"]["text"]))
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = get_reply(kc, msg_id)
    assert reply["content"]["status"] == "ok", plain("".join(reply["content"].get("traceback", [])))
    return arrivals


def test_os_system_streams_its_output_and_returns_the_wait_status(both, request):
    kc = both
    arrivals = stream_arrivals(kc, kc.execute("import os\n"
                                              "status = os.system('echo first; sleep 0.6; echo second >&2')\n"
                                              "print(status, os.system('exit 3'), os.system('kill -TERM $$'))"))
    texts = [text for _, text in arrivals]
    kernel_name = request.node.callspec.params["both"]
    if kernel_name == SERVE_KERNEL_NAME:
        # A host leaves fds 1 and 2 alone unless started with --capture-fd (README: one per process).
        assert texts == ["0 768 15\n"]
        return
    if kernel_name == KERNEL_NAME:
        assert texts == ["first\n", "second\n", "0 768 15\n"]
    else:  # ipykernel's reader thread may hand fd 2's line over after the print
        assert sorted(texts) == ["0 768 15\n", "first\n", "second\n"]
    arrived = {text: when for when, text in arrivals}
    assert arrived["second\n"] - arrived["first\n"] > 0.4  # streamed as it came, not when the command ended


def test_await_and_shell_commands_let_greenlets_run(gk):
    ok(gk, TICKER)
    ok(gk, "import asyncio\nbefore = len(ticks)\nawait asyncio.sleep(0.5)\nduring_await = len(ticks) - before")
    assert int(result_of(gk, "during_await")) >= 5
    for command in ("!echo first; sleep 0.6; echo second", "os.system('echo first; sleep 0.6; echo second')"):
        arrivals = stream_arrivals(gk, gk.execute(f"import os\nbefore = len(ticks)\n{command}\n"
                                                  "during_cmd = len(ticks) - before"))
        assert "".join(text for _, text in arrivals) == "first\nsecond\n"
        assert len(arrivals) >= 2 and arrivals[-1][0] - arrivals[0][0] > 0.4  # streamed as it came
        assert int(result_of(gk, "during_cmd")) >= 5, command
    _, msgs = ok(gk, "%time gevent.sleep(0.3)")
    wall = re.search(r"Wall time: ([\d.]+) (ms|s)", stdout_of(msgs))
    assert wall and 250 <= float(wall.group(1)) * (1000 if wall.group(2) == "s" else 1) < 1000
    ok(gk, "ticker.kill()")


def test_os_system_in_an_os_thread_waits_in_that_thread(gk):
    # Only the main thread's hub reaps children: a real thread gets the blocking system().
    assert stdout_of(ok(gk, "import os\n"
                            "from gevent.monkey import get_original\n"
                            "start_thread, new_lock = get_original('_thread', ['start_new_thread', 'allocate_lock'])\n"
                            "statuses, done = [], new_lock()\n"
                            "done.acquire()\n"
                            "start_thread(lambda: (statuses.append(os.system('echo from the thread; exit 4')),"
                            " done.release()), ())\n"
                            "done.acquire()\n"
                            "print(statuses)")[1]) == "from the thread\n[1024]\n"


def test_clear_magic_clears_the_cell(gk):
    """ipykernel's %clear clears a terminal (qtconsole); in a notebook it means the cell's output."""
    _, msgs = ok(gk, "print('gone')\n%clear")
    assert [m["msg_type"] for m in msgs][-2:] == ["stream", "clear_output"]


def test_working_directory_is_on_the_import_path(gk):
    assert result_of(gk, "import sys; sys.path[0]") == "''"
    ok(gk, "import os, tempfile\nmoddir = tempfile.mkdtemp()\nback = os.getcwd()\n"
           "open(os.path.join(moddir, 'found_here.py'), 'w').write('where = \"moddir\"\\n')\n"
           "os.chdir(moddir)")
    assert result_of(gk, "import found_here; os.chdir(back); found_here.where") == "'moddir'"


def test_busy_and_execute_input_arrive_before_a_spinning_cell_ends(gk):
    started = time.monotonic()
    msg_id = gk.execute("import time\nt = time.time()\nwhile time.time() - t < 1.5:\n    pass")
    arrivals = {}
    while "execute_input" not in arrivals:
        msg = gk.get_iopub_msg(timeout=5)
        if msg["parent_header"].get("msg_id") == msg_id:
            arrivals[msg["msg_type"]] = time.monotonic() - started
    assert arrivals["execute_input"] < 0.5 and arrivals["status"] <= arrivals["execute_input"]
    assert get_reply(gk, msg_id)["content"]["status"] == "ok"


def test_asyncio_run_in_cells(gk):
    ok(gk, "import asyncio\nawait asyncio.sleep(0)")
    assert result_of(gk, "async def main():\n    await asyncio.sleep(0.01)\n    return 'ran'\n"
                         "asyncio.run(main())") == "'ran'"
    ok(gk, "%%bash\ntrue")  # IPython runs script magics on an asyncio loop in a thread (here a greenlet)
    assert result_of(gk, "asyncio.run(main())") == "'ran'"


def test_asyncio_tasks_run_between_cells(gk):
    """Like greenlets, tasks a cell created go on while the kernel is idle, writing to that cell."""
    creator = gk.execute("import asyncio\nasync def tick():\n    for i in range(3):\n"
                         "        print('tick', i)\n        await asyncio.sleep(0.2)\n    return 'ticked'\n"
                         "task = asyncio.get_event_loop().create_task(tick())")
    texts = []
    deadline = time.monotonic() + 10
    while len(texts) < 3 and time.monotonic() < deadline:
        msg = gk.get_iopub_msg(timeout=5)
        if msg["msg_type"] == "stream":
            assert msg["parent_header"]["msg_id"] == creator
            texts.append(msg["content"]["text"])
    assert "".join(texts) == "tick 0\ntick 1\ntick 2\n"
    assert result_of(gk, "await task") == "'ticked'"
    assert result_of(gk, "await asyncio.sleep(0)\nasyncio.get_event_loop() is asyncio.get_running_loop()") == "True"


def test_interrupt_traceback_shows_user_frames(kernel):
    km, kc = kernel
    msg_id = kc.execute("import gevent\ndef waits():\n    gevent.sleep(10)\nwaits()")
    time.sleep(0.5)
    km.interrupt_kernel()
    reply = get_reply(kc, msg_id)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    text = plain("\n".join(reply["content"]["traceback"]))
    assert "waits()" in text and "gevent.sleep(10)" in text
    assert "gevent/hub.py" not in text and "gkernel/" not in text


def test_greenlet_error_shows_user_frames(gk):
    _, msgs = ok(gk, "import gevent\ndef fails():\n    1/0\ngevent.spawn(fails).join()")
    text = plain("".join(c["text"] for c in outputs(msgs, "stream", "stderr")))
    assert "ZeroDivisionError" in text and "1/0" in text
    assert "gevent/greenlet.py" not in text and "gkernel/" not in text


def test_greenlets_magic(gk):
    ok(gk, "import gevent\ndef background():\n    gevent.sleep(60)\nbg = [gevent.spawn(background) for _ in range(2)]")
    _, msgs = ok(gk, "%greenlets")
    table = stdout_of(msgs)
    assert table.splitlines()[0].split() == ["id", "cell", "function", "state", "cell", "age"]
    rows = [line for line in table.splitlines() if "background" in line]
    assert len(rows) == 2 and all("waiting" in row for row in rows)
    first_id = rows[0].split()[0]
    _, msgs = ok(gk, f"%greenlets kill {first_id}")
    assert "killed 1 greenlet(s)" in stdout_of(msgs)
    assert result_of(gk, "sorted(g.dead for g in bg)") == "[False, True]"
    ok(gk, "%greenlets kill all")
    assert result_of(gk, "all(g.dead for g in bg)") == "True"
    reply, _ = execute(gk, "%greenlets kill 999999")
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"


# -- two kernels of one serve host ----------------------------------------------------------


def test_each_hosted_kernel_has_its_own_shell(host):
    _, kc_a = host.kernel()
    _, kc_b = host.kernel()
    ok(kc_a, "ip = get_ipython()\n%xmode Minimal\n%load_ext autoreload")
    ok(kc_b, "ip = get_ipython()")
    assert result_of(kc_a, "ip is get_ipython() and ip.InteractiveTB.mode") == "'Minimal'"
    assert result_of(kc_b, "ip.InteractiveTB.mode") != "'Minimal'"
    loaded = "'IPython.extensions.autoreload' in ip.extension_manager.loaded"
    assert (result_of(kc_a, loaded), result_of(kc_b, loaded)) == ("True", "False")
    # Cells of both interleave on the hub: each one's get_ipython(), displayhook and
    # display() resolve to its own kernel, before and after the other ran.
    slow = kc_a.execute("import gevent, IPython\nmine = get_ipython()\ngevent.sleep(0.5)\n"
                        "display('shown by a')\n(mine is IPython.get_ipython(), 'result of a')")
    time.sleep(0.1)
    _, msgs_b = ok(kc_b, "import IPython\ndisplay('shown by b')\nIPython.get_ipython() is ip, 'result of b'")
    assert get_reply(kc_a, slow)["content"]["status"] == "ok"
    msgs_a = collect_iopub(kc_a, slow)
    assert outputs(msgs_a, "display_data")[0]["data"]["text/plain"] == "'shown by a'"
    assert outputs(msgs_a, "execute_result")[0]["data"]["text/plain"] == "(True, 'result of a')"
    assert outputs(msgs_b, "display_data")[0]["data"]["text/plain"] == "'shown by b'"
    assert outputs(msgs_b, "execute_result")[0]["data"]["text/plain"] == "(True, 'result of b')"
    n_a = get_reply(kc_a, kc_a.execute("1"))["content"]["execution_count"]
    n_b = get_reply(kc_b, kc_b.execute("1"))["content"]["execution_count"]
    assert (n_a, n_b) == (5, 5)


def test_profile_startup_files_and_extensions(tmp_path):
    """IPython's start-up, as under ipython and ipykernel: the profile's config, startup files and extensions."""
    from conftest import start_kernel

    profile = tmp_path / "profile_gk"
    (profile / "startup").mkdir(parents=True)
    (profile / "startup" / "00-first.py").write_text("from_startup = 'py'\n")
    (profile / "startup" / "01-second.ipy").write_text("%load_ext autoreload\nfrom_ipy = !echo ipy\n")
    (profile / "ipython_kernel_config.py").write_text("c.InteractiveShellApp.exec_lines = ['from_config = 4']\n"
                                                      "c.InteractiveShell.xmode = 'Minimal'\n")
    km, kc = start_kernel("--profile-dir", str(profile), "--InteractiveShellApp.exec_lines=from_exec_lines = 3")
    try:
        # The command line's exec_lines win over the profile's config file, which sets xmode.
        assert result_of(kc, "from_startup, from_ipy[0], from_exec_lines") == "('py', 'ipy', 3)"
        assert result_of(kc, "get_ipython().InteractiveTB.mode") == "'Minimal'"
        assert result_of(kc, "'IPython.extensions.autoreload' in get_ipython().extension_manager.loaded") == "True"
        assert result_of(kc, "get_ipython().profile_dir.location") == repr(str(profile))
        assert result_of(kc, "%who_ls") == "[]"  # what start-up defined is hidden, as in IPython
    finally:
        stop_kernel(km, kc)


def test_a_hosted_kernel_takes_a_shell_built_ahead(host):
    """Once the host idles, a spare shell is ready: the next kernel gets it as its own."""
    _, kc_a = host.kernel()
    ok(kc_a, "a_only = 1")
    time.sleep(0.5)  # the host builds its spare meanwhile
    _, kc_b = host.kernel()
    reply, msgs = ok(kc_b, "import __main__\n(__main__.__dict__ is globals(), 'a_only' in globals())")
    assert reply["content"]["execution_count"] == 1
    assert outputs(msgs, "execute_result")[0]["data"]["text/plain"] == "(True, False)"
    assert result_of(kc_b, "get_ipython().kernel.get_parent('shell')['header']['msg_type']") == "'execute_request'"
    assert result_of(kc_a, "a_only, get_ipython() is not None") == "(1, True)"
