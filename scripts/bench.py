"""gkernel vs ipykernel, measured by the same jupyter_client code in one run.

Both kernels are started from their kernelspecs by KernelManager and driven by
BlockingKernelClient. Measurements alternate between the two kernels (round
by round) so that machine noise falls on both alike. Reports median and p99
of each measure and the gkernel/ipykernel ratio of the medians.
"""

import argparse
import statistics
import sys
import time

from jupyter_client.manager import KernelManager

KERNELS = {"gkernel": "gkernel", "ipykernel": "python3"}


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def start(kernel_name):
    """Start a kernel; return (manager, client, seconds until the first kernel_info_reply)."""
    t0 = time.perf_counter()
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels(hb=False)
    while True:
        kc.kernel_info()
        try:
            kc.get_shell_msg(timeout=0.05)
            break
        except Exception:
            if not km.is_alive():
                raise RuntimeError(f"{kernel_name} died while starting")
    elapsed = time.perf_counter() - t0
    drain(kc)
    return km, kc, elapsed


def drain(kc):
    time.sleep(0.2)
    for get in (kc.get_iopub_msg, kc.get_shell_msg):
        while True:
            try:
                get(timeout=0.05)
            except Exception:
                break


def stop(km, kc):
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def rss_mb(km):
    with open(f"/proc/{km.provisioner.process.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_idle(kc, msg_id):
    while True:
        msg = kc.get_iopub_msg(timeout=10)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            return


def wait_reply(kc, msg_id):
    while True:
        if kc.get_shell_msg(timeout=10)["parent_header"].get("msg_id") == msg_id:
            return


def execute_round_trip(kc):
    t0 = time.perf_counter()
    msg_id = kc.execute("pass")
    wait_reply(kc, msg_id)
    wait_idle(kc, msg_id)
    return time.perf_counter() - t0


def kernel_info_round_trip(kc):
    t0 = time.perf_counter()
    msg_id = kc.kernel_info()
    wait_reply(kc, msg_id)
    elapsed = time.perf_counter() - t0
    wait_idle(kc, msg_id)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=8, help="kernel starts per kernel (default 8)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of 50 requests per kernel (default 10)")
    args = parser.parse_args()
    results = {name: {"start": [], "rss": [], "execute": [], "kernel_info": []} for name in KERNELS}

    print(f"starting each kernel {args.starts} times...", file=sys.stderr)
    for _ in range(args.starts):
        for name, spec in KERNELS.items():
            km, kc, elapsed = start(spec)
            results[name]["start"].append(elapsed)
            results[name]["rss"].append(rss_mb(km))
            stop(km, kc)

    clients = {name: start(spec) for name, spec in KERNELS.items()}
    print(f"{args.rounds} rounds of 50 executes and 50 kernel_info requests per kernel...", file=sys.stderr)
    for name, (km, kc, _) in clients.items():  # warm up
        for _ in range(20):
            execute_round_trip(kc)
            kernel_info_round_trip(kc)
    for _ in range(args.rounds):
        for name, (km, kc, _) in clients.items():
            results[name]["execute"] += [execute_round_trip(kc) for _ in range(50)]
            results[name]["kernel_info"] += [kernel_info_round_trip(kc) for _ in range(50)]
    for km, kc, _ in clients.values():
        stop(km, kc)

    rows = [
        ("start to first kernel_info_reply", "start", 1000, "ms"),
        ("execute 'pass' round trip (reply + idle)", "execute", 1000, "ms"),
        ("kernel_info round trip", "kernel_info", 1000, "ms"),
        ("RSS after start", "rss", 1, "MB"),
    ]
    g, i = results["gkernel"], results["ipykernel"]
    print(f"\ngkernel vs ipykernel (Python {sys.version.split()[0]}; lower is better)\n")
    print("| measure | gkernel median | gkernel p99 | ipykernel median | ipykernel p99 | ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, key, scale, unit in rows:
        gm, im = statistics.median(g[key]) * scale, statistics.median(i[key]) * scale
        gp, ip = percentile(g[key], 99) * scale, percentile(i[key], 99) * scale
        print(f"| {label} | {gm:.2f} {unit} | {gp:.2f} {unit} | {im:.2f} {unit} | {ip:.2f} {unit} | {gm / im:.2f}x |")


if __name__ == "__main__":
    main()
