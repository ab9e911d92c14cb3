#!/usr/bin/env python3
"""Strata and Apache Iggy side by side: the same workloads, interleaved, in one sitting.

Usage:
    scripts/compare-iggy.py --iggy-server PATH --iggy-bench PATH [--strata target/release/strata]
                            [--rounds 5] [--workloads 1k,100b,fsync,8x8,1000p] [--in-flight 1]

Each round runs every workload once on each broker, alternating which goes
first, with a fresh server and a fresh data directory per run (loopback,
Iggy over TCP with --nodelay; each producer has one batch outstanding on
both sides, as iggy-bench's do, unless --in-flight says otherwise). Per
workload and broker it prints the median and range of produce and consume
throughput and produce p99 per batch, the
Strata / Iggy ratio of the medians, and CPU seconds per GB produced for the
client (produce and consume together, on both sides) and the server.

What each side acknowledges (so read the ratios knowing it): Iggy without
--enforce-fsync replies once a batch is in its memory / the page cache;
Strata's `--acks written` once the batch reached the OS; the fsync workload
is Iggy --enforce-fsync against Strata --acks durable. Iggy's 100 B messages
carry a 64 B header each (not counted in its MB/s); both verify checksums
on read. Build Iggy yourself, outside this repository; this script only
runs the binaries it is given.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

WORKLOADS = {
    # name: (record bytes, records per batch, batches in all, strata acks, iggy fsync,
    #        producers, partitions)
    "1k": (1000, 1000, 1000, "written", False, 1, 1),
    "100b": (100, 1000, 2000, "written", False, 1, 1),
    "fsync": (1000, 1000, 1000, "durable", True, 1, 1),
    # 8 producers, each on its own partition (Iggy: its own stream), 8 consumers.
    "8x8": (1000, 1000, 1000, "written", False, 8, 8),
    # 8 producers spreading batches round-robin over 1,000 partitions (Iggy:
    # balanced producers and a group of 8 consumers), 100 records per batch.
    "1000p": (1000, 100, 10000, "written", False, 8, 1000),
}

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def timed(cmd, env=None):
    """Runs cmd; returns (output, client CPU seconds)."""
    start = os.times()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    end = os.times()
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr[-2000:]}")
    cpu = (end.children_user - start.children_user) + (end.children_system - start.children_system)
    return out.stdout + out.stderr, cpu


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_strata(args, workload):
    size, per_batch, batches, acks, _, producers, partitions = WORKLOADS[workload]
    data = tempfile.mkdtemp(prefix="cmp-strata-")
    port = free_port()
    env = dict(os.environ, STRATA_SERVER__METRICS_LISTEN="")
    server = subprocess.Popen(
        [args.strata, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        out, client_cpu = timed(
            [args.strata, "bench", "--addr", f"127.0.0.1:{port}", "--record-size", str(size),
             "--batch-records", str(per_batch), "--batches", str(batches), "--acks", acks,
             "--producers", str(producers), "--partitions", str(partitions),
             # iggy-bench producers await each batch before sending the
             # next: by default Strata's do too, so latencies compare.
             "--in-flight", str(args.in_flight),
             # One Subscribe stream per partition up to 64 partitions (on
             # one connection per producer, as iggy-bench has one per
             # consumer), else Fetch requests covering every partition.
             "--consume-with", "subscribe" if partitions <= 64 else "fetch"], env)
        server_cpu = cpu_seconds(server.pid)
    finally:
        stop(server)
        shutil.rmtree(data, ignore_errors=True)
    fig = {}
    for phase in ("produce", "consume"):
        m = re.search(phase + r"\s+\d+ records\s+[\d.]+ MB in\s+[\d.]+ s =\s+([\d.]+) MB/s.*?p99 ([\d.]+)", out)
        if not m:
            raise RuntimeError(f"no {phase} figure in strata bench output:\n{out}")
        fig[phase] = float(m.group(1))
        fig[phase + "_p99"] = float(m.group(2))
    gb = size * per_batch * batches / 1e9
    fig["client_cpu_per_gb"] = client_cpu / gb
    fig["server_cpu_per_gb"] = server_cpu / gb
    return fig


def run_iggy(args, workload):
    size, per_batch, batches, _, fsync, producers, partitions = WORKLOADS[workload]
    data = tempfile.mkdtemp(prefix="cmp-iggy-")
    port = free_port()
    env = dict(os.environ, IGGY_SYSTEM_PATH=os.path.join(data, "local_data"),
               IGGY_TCP_ADDRESS=f"127.0.0.1:{port}", IGGY_HTTP_ENABLED="false",
               IGGY_QUIC_ENABLED="false", IGGY_WEBSOCKET_ENABLED="false",
               IGGY_ROOT_USERNAME="iggy", IGGY_ROOT_PASSWORD="iggy")
    server = subprocess.Popen([args.iggy_server], env=env, cwd=data,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fig = {}
    client_cpu = 0.0
    try:
        wait_port(port)
        # iggy-bench's -b counts batches per producer (and per consumer).
        common = ["-m", str(size), "-P", str(per_batch), "-b", str(batches // producers)]
        if fsync:
            common.append("--enforce-fsync")
        if partitions == producers:
            kinds = (("produce", ["pinned-producer", "--streams", str(producers), "--producers", str(producers)]),
                     ("consume", ["pinned-consumer", "--streams", str(producers), "--consumers", str(producers)]))
        else:
            kinds = (("produce", ["balanced-producer", "--partitions", str(partitions),
                                  "--producers", str(producers)]),
                     ("consume", ["balanced-consumer-group", "--consumers", str(producers)]))
        for phase, kind in kinds:
            out, cpu = timed([args.iggy_bench, *common, *kind,
                              "tcp", "--server-address", f"127.0.0.1:{port}", "--nodelay"], env)
            # Both phases, as strata bench does both in one process.
            client_cpu += cpu
            # The group summary: total throughput over all actors.
            m = re.search(r"(?:Producers|Consumers) Results: Total throughput: ([\d.]+) MB/s.*?"
                          r"p99 latency: ([\d.]+) ms", out, re.S)
            if not m:
                raise RuntimeError(f"no {phase} figure in iggy-bench output:\n{out[-3000:]}")
            fig[phase] = float(m.group(1))
            fig[phase + "_p99"] = float(m.group(2))
        server_cpu = cpu_seconds(server.pid)
    finally:
        stop(server)
        shutil.rmtree(data, ignore_errors=True)
    gb = size * per_batch * batches / 1e9
    fig["client_cpu_per_gb"] = client_cpu / gb
    fig["server_cpu_per_gb"] = server_cpu / gb
    return fig


def summary(values):
    return statistics.median(values), min(values), max(values)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strata", default="target/release/strata")
    p.add_argument("--iggy-server", required=True)
    p.add_argument("--iggy-bench", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--in-flight", type=int, default=1,
                   help="strata bench produce requests in flight per producer (iggy-bench: 1)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    args = p.parse_args()
    workloads = args.workloads.split(",")
    results = {(w, b): [] for w in workloads for b in ("strata", "iggy")}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for r in range(args.rounds):
        for w in workloads:
            order = [("strata", run_strata), ("iggy", run_iggy)]
            if r % 2:
                order.reverse()
            for name, run in order:
                fig = run(args, w)
                results[(w, name)].append(fig)
                print(f"round {r + 1} {w:6} {name:6} produce {fig['produce']:7.1f} MB/s consume "
                      f"{fig['consume']:7.1f} MB/s p99 {fig['produce_p99']:6.2f} ms", flush=True)
    print(f"\n{args.rounds} interleaved rounds from {started}, "
          f"{os.cpu_count()} cores; medians (min-max)")
    print(f"{'workload':8} {'figure':18} {'Strata':>22} {'Iggy':>22} {'Strata/Iggy':>12}")
    for w in workloads:
        for key, label in (("produce", "produce MB/s"), ("consume", "consume MB/s"),
                           ("produce_p99", "produce p99 ms"), ("client_cpu_per_gb", "client CPU s/GB"),
                           ("server_cpu_per_gb", "server CPU s/GB")):
            s = summary([f[key] for f in results[(w, "strata")]])
            i = summary([f[key] for f in results[(w, "iggy")]])
            ratio = s[0] / i[0] if i[0] else float("nan")
            print(f"{w:8} {label:18} {s[0]:9.2f} ({s[1]:.1f}-{s[2]:.1f}) {i[0]:9.2f} ({i[1]:.1f}-{i[2]:.1f}) {ratio:12.2f}")


if __name__ == "__main__":
    main()
