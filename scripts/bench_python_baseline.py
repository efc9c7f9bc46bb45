#!/usr/bin/env python3
"""The plain Python pipeline the engine is measured against: json.loads on every record and
Drain3 template mining on the error messages, clustered by (account, region, source, API,
error kind, Drain3 cluster).

    python3 scripts/bench_python_baseline.py [--in-memory] RECORDS.jsonl

Prints one line: `python records=... records_per_sec=... mb_per_sec=... cpu_records_per_sec=...
clusters=... secs=... cpu_secs=...`; the `cpu_` figures count the time the process was on a CPU,
as the Rust side's do, so that both can be compared on a busy machine.
The whole loop is timed, reading lines included, as the Rust side does with
ENGINE_SCALE_INPUT. If drain3 is not installed (`pip install drain3`), a small Drain-style
clusterer written here stands in for it, and the line says `miner=fallback`.
"""

import contextlib
import json
import logging
import sys
import time


class MiniDrain:
    """Drain in brief: messages of the same length whose tokens match a cluster's template
    (ignoring `<*>` and with at least half the tokens equal) join it; differing tokens become
    `<*>`. Tokens with digits are masked first, as Drain3's default masking roughly does."""

    def __init__(self, sim=0.5):
        self.sim = sim
        self.groups = {}

    def add_log_message(self, msg):
        toks = ["<*>" if any(c.isdigit() for c in t) else t for t in msg.split()]
        bucket = self.groups.setdefault((len(toks), toks[0] if toks else ""), [])
        for tpl in bucket:
            same = sum(1 for a, b in zip(tpl, toks) if a == b or a == "<*>")
            if same >= self.sim * len(toks):
                for i, (a, b) in enumerate(zip(tpl, toks)):
                    if a != b:
                        tpl[i] = "<*>"
                return {"cluster_id": id(tpl)}
        bucket.append(toks)
        return {"cluster_id": id(toks)}


def make_miner():
    try:
        from drain3 import TemplateMiner
        from drain3.template_miner_config import TemplateMinerConfig
    except ImportError:
        return MiniDrain(), "fallback"
    logging.disable(logging.CRITICAL)
    cfg = TemplateMinerConfig()
    cfg.profiling_enabled = False
    return TemplateMiner(config=cfg), "drain3"


def error_kind(r):
    if r.get("eventName") == "ConsoleLogin":
        resp = r.get("responseElements")
        login = resp.get("ConsoleLogin") if isinstance(resp, dict) else None
        if login == "Failure" or r.get("errorMessage") == "Failed authentication":
            return "ConsoleLoginFailure"
    return r.get("errorCode") or None


def main():
    args = sys.argv[1:]
    # --in-memory: the file is read and split into lines before the clock starts, so only the
    # pipeline itself is timed (the Rust side's ENGINE_SCALE_IN_MEMORY=1).
    in_memory = "--in-memory" in args
    path = [a for a in args if a != "--in-memory"][0]
    miner, which = make_miner()
    clusters = {}
    records = nbytes = malformed = 0
    if in_memory:
        with open(path, "rb") as f:
            source = f.read().split(b"\n")
    else:
        source = open(path, "rb")
    start, cpu_start = time.perf_counter(), time.process_time()
    with contextlib.nullcontext(source) if in_memory else source as f:
        for line in f:
            line = line.rstrip(b"\n")
            if not line:
                continue
            records += 1
            nbytes += len(line)
            try:
                r = json.loads(line)
            except ValueError:
                malformed += 1
                continue
            if not isinstance(r, dict):
                malformed += 1
                continue
            kind = error_kind(r)
            if kind is None:
                continue
            account = r.get("recipientAccountId") or (r.get("userIdentity") or {}).get("accountId") or ""
            res = miner.add_log_message(r.get("errorMessage") or "")
            key = (account, r.get("awsRegion") or "", r.get("eventSource"), r.get("eventName"), kind, res["cluster_id"])
            clusters[key] = clusters.get(key, 0) + 1
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(
        f"python records={records} records_per_sec={records / secs:.0f} mb_per_sec={nbytes / secs / 1e6:.0f} "
        f"cpu_records_per_sec={records / cpu:.0f} "
        f"in_memory={in_memory} clusters={len(clusters)} errors={sum(clusters.values())} malformed={malformed} miner={which} secs={secs:.3f} "
        f"cpu_secs={cpu:.3f}"
    )


if __name__ == "__main__":
    main()
