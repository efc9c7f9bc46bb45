#!/usr/bin/env python3
"""A slow-client attack on a running service, from this host to itself (loopback only).

Opens CONNECTIONS connections at once, without a token: two in three send a request head a
header line at a time, every INTERVAL seconds, and never finish it; one in three sends a full
head for `POST /api/v1/al/<id>` and then a body one byte at a time. Meanwhile `/healthz` is
asked on a fresh connection every half second, from a process of its own. Attack connections
the service closes are opened again, until HOLD seconds have passed; then all are closed and
the service's memory is read again after SETTLE seconds. One summary line, `key=value` pairs:

    slow-clients connections=… hold_s=… probes=… probe_failures=… probe_p50_ms=… probe_max_ms=…
      closed_by_service=… answered_503=… reopened=… open_failures=… rss_before_mb=… rss_peak_mb=…
      rss_after_mb=… fds_before=… fds_peak=… fds_after=…

Usage: slow_clients.py PORT PID [CONNECTIONS HOLD INTERVAL SETTLE]
"""

import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time

HOST = "127.0.0.1"


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Tally:
    def __init__(self):
        self.closed = 0
        self.answered_503 = 0
        self.reopened = 0
        self.open_failures = 0


async def slow_client(n, port, interval, deadline, tally):
    """One attack connection, opened again whenever the service closes it."""
    first = True
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            tally.open_failures += 1
            await asyncio.sleep(interval)
            continue
        if not first:
            tally.reopened += 1
        first = False
        slow_body = n % 3 == 0
        try:
            if slow_body:
                writer.write(
                    b"POST /api/v1/al/" + b"0" * 64 + b" HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
                )
            else:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
            while time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(4096), timeout=interval)
                except asyncio.TimeoutError:
                    writer.write(b" " if slow_body else b"X-Slow: a\r\n")
                    await writer.drain()
                    continue
                # An answer (408, 503) or the end of the connection: the service let go.
                if data.startswith(b"HTTP/1.1 503"):
                    tally.answered_503 += 1
                tally.closed += 1
                break
        except (OSError, ConnectionError):
            tally.closed += 1
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass


def probe(port, until, results):
    """`GET /healthz` every half second on a fresh connection, each given 5 s to answer 200.

    Runs in a process of its own, so that what it measures is the service, not this script's
    event loop busy with thousands of connections. Puts (seconds since start, ms or None).
    """
    started_at = time.monotonic()
    while time.monotonic() < until:
        started = time.monotonic()
        ms = None
        try:
            with socket.create_connection((HOST, port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    ms = (time.monotonic() - started) * 1000
        except OSError:
            pass
        results.put((started - started_at, ms))
        time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    results.put(None)


async def main():
    port = int(sys.argv[1])
    pid = int(sys.argv[2])
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 60
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 5
    settle = float(sys.argv[6]) if len(sys.argv) > 6 else 10
    tally = Tally()
    before = rss_mb(pid)
    fds_before = open_fds(pid)
    deadline = time.monotonic() + hold
    peak = before
    fds_peak = fds_before

    async def watch_memory():
        nonlocal peak, fds_peak
        while time.monotonic() < deadline:
            peak = max(peak, rss_mb(pid))
            fds_peak = max(fds_peak, open_fds(pid))
            await asyncio.sleep(0.5)

    # Probed through the attack and the settling after it; only the attack's probes count.
    results = multiprocessing.Queue()
    prober = multiprocessing.Process(target=probe, args=(port, deadline + settle, results), daemon=True)
    prober.start()
    tasks = [asyncio.create_task(watch_memory())]
    # Opened in batches, as fast as the loopback takes them.
    for start in range(0, connections, 500):
        for n in range(start, min(start + 500, connections)):
            tasks.append(asyncio.create_task(slow_client(n, port, interval, deadline, tally)))
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    await asyncio.sleep(settle)
    after = rss_mb(pid)
    fds_after = open_fds(pid)
    probes, failures = [], 0
    for at, ms in iter(results.get, None):
        if at <= hold:
            if ms is None:
                failures += 1
            else:
                probes.append(ms)
    prober.join()
    p = probes or [float("nan")]
    print(
        f"slow-clients connections={connections} hold_s={hold:.0f} probes={len(probes) + failures} "
        f"probe_failures={failures} probe_p50_ms={statistics.median(p):.1f} "
        f"probe_max_ms={max(p):.1f} closed_by_service={tally.closed} answered_503={tally.answered_503} "
        f"reopened={tally.reopened} open_failures={tally.open_failures} rss_before_mb={before:.0f} "
        f"rss_peak_mb={peak:.0f} rss_after_mb={after:.0f} fds_before={fds_before} fds_peak={fds_peak} fds_after={fds_after}"
    )


if __name__ == "__main__":
    asyncio.run(main())
