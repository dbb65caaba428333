"""The gkernel-serve provisioner: unmodified KernelManager and nbclient, kernels inside a serve host."""

import os
import time

import pytest

from conftest import SERVE_KERNEL_NAME, execute, get_reply, result_of

pytestmark = pytest.mark.timeout(120)


def start(**kwargs):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=SERVE_KERNEL_NAME)
    km.start_kernel(**kwargs)
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def test_kernel_manager_runs_kernels_in_one_host():
    from gkernel.manage import HostClient

    km1, kc1 = start()
    km2, kc2 = start()
    try:
        assert km1.kernel_spec.interrupt_mode == "message"
        host = HostClient()
        hosted = {k["id"] for k in host.list()}
        assert {km1.provisioner.kernel_id_in_host, km2.provisioner.kernel_id_in_host} <= hosted
        assert result_of(kc1, "import os\nos.getpid()") == result_of(kc2, "import os\nos.getpid()")
        assert result_of(kc1, "os.getpid()") != str(os.getpid())
        execute(kc1, "x = 1")
        assert execute(kc2, "x")[0]["content"]["ename"] == "NameError"
        assert km1.is_alive()

        # interrupt_kernel sends interrupt_request (message mode): it reaches a spinning cell.
        cell = kc1.execute("while True:\n    pass")
        time.sleep(0.4)
        km1.interrupt_kernel()
        assert get_reply(kc1, cell, timeout=10)["content"]["ename"] == "KeyboardInterrupt"

        km1.restart_kernel(now=False)
        kc1.wait_for_ready(timeout=60)
        assert execute(kc1, "x")[0]["content"]["ename"] == "NameError"
        host.close()
    finally:
        stop(km1, kc1)
        first = km2.provisioner.kernel_id_in_host
        stop(km2, kc2)
    host = HostClient()
    assert first not in {k["id"] for k in host.list()}
    assert not km2.is_alive()
    host.close()


def test_nbclient_runs_notebooks_in_a_host_at_once():
    import nbformat
    from concurrent.futures import ThreadPoolExecutor
    from nbclient import NotebookClient

    path = os.path.join(os.path.dirname(__file__), "..", "examples", "tour.ipynb")

    def run(_):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, kernel_name=SERVE_KERNEL_NAME, timeout=60).execute()
        return [o for cell in nb.cells for o in cell.get("outputs", []) if o["output_type"] == "error"]

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(run, range(3))) == [[], [], []]


def test_async_kernel_manager_as_jupyter_server_uses_it():
    """jupyter_server's kernels are AsyncKernelManagers: the same provisioner path, awaited."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    async def scenario():
        km = AsyncKernelManager(kernel_name=SERVE_KERNEL_NAME)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)
            reply = await kc.execute("print('async')", reply=True, timeout=30)
            assert reply["content"]["status"] == "ok"
            assert await km.is_alive()
            await km.restart_kernel()
            await kc.wait_for_ready(timeout=60)
        finally:
            kc.stop_channels()
            await km.shutdown_kernel()
        assert not await km.is_alive()

    asyncio.run(scenario())
