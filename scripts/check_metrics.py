"""Reads a /metrics exposition (scripts/check-metrics.sh) with prometheus_client's own parser
and checks the series operators alert on are there, zero-valued states included.

    check_metrics.py FILE INSPECTION_ID...   (the enabled inspections: succeeded, never succeeded)
"""

import sys

from prometheus_client.parser import text_string_to_metric_families


def main(path, succeeded, never):
    text = open(path).read()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {}
    for f in families.values():
        for s in f.samples:
            samples.setdefault(s.name, []).append(s)

    def one(name, **labels):
        found = [s for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return found[0].value

    p = "cloudtrail_inspector"
    assert one(f"{p}_build_info") == 1
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
            "process_start_time_seconds", "process_virtual_memory_bytes"} <= set(families), sorted(families)
    assert one("process_resident_memory_bytes") > 1e6 and one("process_open_fds") > 3
    assert one("process_start_time_seconds") > 1.7e9

    # HTTP durations by route and method, as the requests made before the scrape.
    assert one(f"{p}_http_request_duration_seconds_count", method="POST", route="/api/v1/inspections/{id}/runs") == 1
    assert one(f"{p}_http_request_duration_seconds_count", method="GET", route="/api/v1/runs/{id}") >= 1

    # AWS calls by operation and outcome, every series from the start.
    for op in ("FilterLogEvents", "StartQuery", "GetQueryResults"):
        for outcome in ("ok", "throttled", "error"):
            assert one(f"{p}_aws_calls_total", operation=op, outcome=outcome) == 0, (op, outcome)

    # Per enabled inspection: the last successful run, 0 for one that never had one.
    assert one(f"{p}_inspection_last_success_timestamp_seconds", inspection_id=succeeded) > 1.7e9
    assert one(f"{p}_inspection_last_success_timestamp_seconds", inspection_id=never) == 0
    assert len(samples[f"{p}_inspection_last_success_timestamp_seconds"]) == 2, "disabled ones are left out"

    # Zero-valued states are series too.
    for status in ("succeeded", "partial", "failed", "interrupted"):
        one(f"{p}_runs_total", status=status)
    for state in ("pending", "sent", "failed", "expired", "not_sent"):
        one(f"{p}_events", delivery_state=state)
    assert one(f"{p}_events", delivery_state="sent") == 0
    assert one(f"{p}_store_up") == 1
    print(f"metrics: {len(families)} families, {sum(map(len, samples.values()))} samples parsed and checked")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
