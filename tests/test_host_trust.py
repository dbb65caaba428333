"""What the gkernel-serve provisioner believes about hosts: files, processes, hosts that died or hang.

Each test has a runtime directory of its own (hosts started on demand write
their host files there) and stops the hosts it started. Kernels go through
jupyter_client's AsyncKernelManager, as under jupyter_server; an asyncio
ticker checks that no provisioner call holds the event loop.
"""

import asyncio
import json
import os
import stat
import signal
import subprocess
import sys
import time

import pytest

from conftest import GKERNEL, SERVE_KERNEL_NAME, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    """A private runtime directory for this test; the hosts started in it are stopped afterwards."""
    from gkernel.manage import HostClient, HostError, host_files

    path = tmp_path / "runtime"
    path.mkdir(mode=0o700)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(path))
    yield path
    for host_file in list(host_files(str(path))):
        try:
            HostClient(host_file, timeout=5).stop()
        except HostError:
            pass


def write_host_file(runtime, name, info, mode=0o600):
    path = runtime / name
    path.write_text(json.dumps(info))
    os.chmod(path, mode)
    return path


class LoopWatch:
    """The longest time the event loop went without running a 10 ms ticker."""

    def __init__(self):
        self.longest = 0.0
        self._task = None

    async def __aenter__(self):
        async def tick():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                self.longest = max(self.longest, now - last)
                last = now
        self._task = asyncio.create_task(tick())
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()


async def start_async():
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=SERVE_KERNEL_NAME)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    return km, kc


async def run_cell(kc, code):
    reply = await kc.execute_interactive(code, timeout=30)
    return reply["content"]["status"]


def test_stale_zombie_and_reused_pid_host_files_are_removed_and_a_new_host_starts(runtime):
    from gkernel._trust import start_ticks
    from gkernel.manage import find_host_file

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and is not reaped until the end
    assert wait_for(lambda: start_ticks(zombie.pid) is None, timeout=10)
    base = {"ip": "127.0.0.1", "port": 1, "key": "k", "signature_scheme": "hmac-sha256"}
    stale = [write_host_file(runtime, "gkernel-serve-1.json", {**base, "pid": dead.pid}),
             write_host_file(runtime, "gkernel-serve-2.json", {**base, "pid": zombie.pid}),
             # our own pid, alive, but not the process that wrote the file: it started at another time
             write_host_file(runtime, "gkernel-serve-3.json", {**base, "pid": os.getpid(),
                                                               "started": start_ticks() + 1})]
    try:
        assert find_host_file(str(runtime)) is None
        assert not any(path.exists() for path in stale)

        async def main():
            started = time.monotonic()
            km, kc = await start_async()
            assert await run_cell(kc, "1") == "ok"
            kc.stop_channels()
            await km.shutdown_kernel()
            return time.monotonic() - started
        assert asyncio.run(main()) < 10  # no 10 s wait for a host that cannot answer
    finally:
        zombie.wait()


def test_files_others_could_have_written_are_never_used_nor_removed(runtime, tmp_path):
    from gkernel._trust import claim_file
    from gkernel.manage import HostClient, HostError, find_host_file

    # A live host's file, but readable by others: not ours to trust.
    proc = subprocess.Popen([GKERNEL, "serve", "--host-file", str(tmp_path / "real.json")])
    try:
        assert wait_for(lambda: (tmp_path / "real.json").exists())
        info = json.loads((tmp_path / "real.json").read_text())
        planted = write_host_file(runtime, "gkernel-serve-9.json", info, mode=0o644)
        assert find_host_file(str(runtime)) is None and planted.exists()
        with pytest.raises(HostError, match="refusing host file .* not a private file"):
            HostClient(str(planted))
        if os.getuid() == 0:  # (CI runs as root: a file of another user)
            os.chmod(planted, 0o600)
            os.chown(planted, 65534, 65534)
            assert find_host_file(str(runtime)) is None and planted.exists()
            with pytest.raises(HostError, match="owner uid 65534"):
                HostClient(str(planted))
        # An older gkernel's lock file (made under the umask) is ours: taken back, made private.
        lock = runtime / "gkernel-serve.lock"
        lock.write_text("")
        os.chmod(lock, 0o644)
        fd = os.open(lock, os.O_RDWR)
        try:
            claim_file(fd, str(lock))
        finally:
            os.close(fd)
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600

        # A planted one: the provisioner refuses it, with the reason, rather than obey it.
        async def refused(reason):
            with pytest.raises(Exception, match=reason):
                await start_async()
        lock.unlink()
        os.symlink(tmp_path / "elsewhere", lock)
        asyncio.run(refused("cannot open the lock file"))
        if os.getuid() == 0:
            lock.unlink()
            lock.write_text("")
            os.chown(lock, 65534, 65534)
            asyncio.run(refused("refusing the lock file: .* not a file of yours"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_host_that_does_not_answer_is_passed_over_without_blocking_the_loop(runtime):
    from gkernel.manage import find_host_file

    hung = subprocess.Popen([GKERNEL, "serve"])
    try:
        assert wait_for(lambda: find_host_file(str(runtime)) is not None)
        hung.send_signal(signal.SIGSTOP)

        async def main():
            async with LoopWatch() as watch:
                km, kc = await start_async()
                assert await run_cell(kc, "import os\nos.getpid()") == "ok"
                hosted_in = km.provisioner._client.info["pid"]
                kc.stop_channels()
                await km.shutdown_kernel()
            return watch.longest, hosted_in
        longest, hosted_in = asyncio.run(main())
        assert hosted_in != hung.pid
        assert longest < 0.5, f"the event loop was held for {longest:.2f} s"
    finally:
        hung.send_signal(signal.SIGCONT)
        hung.terminate()
        hung.wait(timeout=20)


def test_a_killed_host_is_noticed_within_a_second_and_restart_starts_a_new_one(runtime):
    async def main():
        async with LoopWatch() as watch:
            km, kc = await start_async()
            assert await run_cell(kc, "x = 1") == "ok"
            pid = km.provisioner._client.info["pid"]
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            while await km.is_alive():
                assert time.monotonic() - killed < 1.0, "the dead host went unnoticed for a second"
                await asyncio.sleep(0.05)
            await km.restart_kernel(now=True)
            await kc.wait_for_ready(timeout=60)
            assert km.provisioner._client.info["pid"] != pid
            reply = await kc.execute_interactive("x", timeout=30)
            assert reply["content"]["ename"] == "NameError"  # a new kernel, in a new host
            kc.stop_channels()
            await km.shutdown_kernel()
        return watch.longest
    longest = asyncio.run(main())
    assert longest < 0.5, f"the event loop was held for {longest:.2f} s"


def test_a_host_refuses_a_runtime_directory_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    run = subprocess.run([GKERNEL, "serve", "--host-file", str(shared / "host.json")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "not a directory only you can write to" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not (shared / "host.json").exists()
