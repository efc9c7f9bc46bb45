"""Checks of the OpenAPI document that need more than its validator (scripts/check-openapi.sh).

    check_openapi.py examples DOCUMENT
        Every example in the document (named ones, request bodies, answers) is valid against
        the schema it illustrates, formats (uuid, date-time) included.

    check_openapi.py client BASE_URL TOKEN
        Drives the service through the client openapi-python-client generated from the
        document (importable as `cti_client`): every call is made and every answer parsed by
        generated code, so the document is shown to describe what the service really does.
"""

import datetime
import json
import sys
import time
import uuid


def check_examples(path):
    from openapi_schema_validator import OAS31Validator

    doc = json.load(open(path))
    named = doc["components"].get("examples", {})

    def validate(where, schema, value):
        # The schema's references point into the document's components: give them the same
        # root.
        rooted = dict(schema, components=doc["components"])
        errors = list(OAS31Validator(rooted, format_checker=OAS31Validator.FORMAT_CHECKER).iter_errors(value))
        for e in errors:
            print(f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
        return not errors

    checked = failed = 0
    for path_name, item in doc["paths"].items():
        for method, op in item.items():
            parts = [("request", (op.get("requestBody") or {}).get("content", {}))]
            parts += [(f"answer {status}", r.get("content", {})) for status, r in op["responses"].items()]
            for part, content in parts:
                for media_type, media in content.items():
                    examples = [media["example"]] if "example" in media else []
                    for e in media.get("examples", {}).values():
                        if "$ref" in e:
                            e = named[e["$ref"].rsplit("/", 1)[1]]
                        examples.append(e["value"])
                    for value in examples:
                        checked += 1
                        where = f"{method.upper()} {path_name} {part} ({media_type})"
                        failed += not validate(where, media.get("schema", {}), value)
    unused = set(named) - {
        e["$ref"].rsplit("/", 1)[1]
        for item in doc["paths"].values()
        for op in item.values()
        for r in op["responses"].values()
        for media in r.get("content", {}).values()
        for e in media.get("examples", {}).values()
    }
    if unused:
        print(f"named examples no answer shows: {sorted(unused)}", file=sys.stderr)
        failed += 1
    print(f"examples: {checked} checked against their schemas, {failed} invalid")
    if checked < 20 or failed:
        sys.exit(1)


def drive_client(base_url, token):
    from cti_client import AuthenticatedClient, Client
    from cti_client.api.clusters import get_cluster, list_access_keys, list_inspection_clusters
    from cti_client.api.events import get_event, list_inspection_events
    from cti_client.api.func import al_post, bat_post
    from cti_client.api.health import get_readiness
    from cti_client.api.inspections import create_inspection, delete_inspection, get_inspection
    from cti_client.api.inspections import list_inspections, update_inspection
    from cti_client.api.runs import get_run, list_run_clusters, list_runs, trigger_run
    from cti_client.models import AccessKeyPage, ClusterPage, ClusterView, ErrorBody, EventPage, EventView, FuncBoxed
    from cti_client.models import FuncCall, FuncKwargs, InspectionView, NewInspection, Run, RunClusterPage, RunPage
    from cti_client.models import RunRequest

    steps = []

    def step(name, response, status, kind):
        assert response.status_code == status, f"{name}: {response.status_code} {response.content[:500]!r}"
        assert isinstance(response.parsed, kind), f"{name}: parsed as {type(response.parsed).__name__}"
        steps.append(name)
        return response.parsed

    client = AuthenticatedClient(base_url=base_url, token=token, raise_on_unexpected_status=True, timeout=60)
    anonymous = Client(base_url=base_url, raise_on_unexpected_status=True)
    ready = get_readiness.sync_detailed(client=anonymous)
    assert ready.status_code == 200 and ready.parsed.database == "sqlite", ready
    denied = step("list without a token", list_inspections.sync_detailed(client=anonymous), 401, ErrorBody)
    assert denied.error.code == "unauthorized"

    body = NewInspection.from_dict({
        "name": "generated-client",
        "log_groups": ["sample"],
        "source": {"kind": "files", "path": "cloudtrail"},
        "aws": {"region": "us-east-1"},
        "baseline_days": 0,
    })
    inspection = step("create", create_inspection.sync_detailed(client=client, body=body), 201, InspectionView)
    again = step("create again", create_inspection.sync_detailed(client=client, body=body), 409, ErrorBody)
    assert again.error.code == "name_taken"

    # No body: the window follows the watermark (the last hour), where the sample has nothing.
    first = step("run, no body", trigger_run.sync_detailed(inspection.id, client=client), 200, Run)
    assert first.status.value == "succeeded" and first.records_scanned == 0, first
    window = RunRequest(
        window_start=datetime.datetime(2026, 1, 15, 8, tzinfo=datetime.timezone.utc),
        window_end=datetime.datetime(2026, 1, 15, 9, 5, tzinfo=datetime.timezone.utc),
    )
    run = step("run the sample's hour", trigger_run.sync_detailed(inspection.id, client=client, body=window), 200, Run)
    assert run.status.value == "succeeded" and run.clusters_new > 0, run
    assert run.report.new_clusters and run.report.access_keys, run.report

    page = step("list runs", list_runs.sync_detailed(client=client, inspection_id=inspection.id, limit=1), 200, RunPage)
    assert len(page.items) == 1 and page.next_cursor, page
    rest = step("next page", list_runs.sync_detailed(client=client, inspection_id=inspection.id,
                                                     cursor=page.next_cursor), 200, RunPage)
    assert {r.id for r in page.items + rest.items} == {first.id, run.id}
    bad = step("limit out of bounds", list_runs.sync_detailed(client=client, limit=0), 400, ErrorBody)
    assert bad.error.code == "bad_request"

    read = step("read the run", get_run.sync_detailed(run.id, client=client), 200, Run)
    assert read.report.new_error_records == run.report.new_error_records
    clusters = step("run's clusters", list_run_clusters.sync_detailed(run.id, client=client, limit=3), 200, RunClusterPage)
    assert len(clusters.items) == 3 and clusters.items[0].is_new
    cluster = step("a cluster", get_cluster.sync_detailed(clusters.items[0].cluster_id, client=client), 200, ClusterView)
    assert cluster.sample_record is not None and cluster.fingerprint == clusters.items[0].fingerprint
    step("inspection's clusters", list_inspection_clusters.sync_detailed(inspection.id, client=client), 200, ClusterPage)
    keys = step("access keys", list_access_keys.sync_detailed(inspection.id, client=client), 200, AccessKeyPage)
    assert keys.items and keys.items[0].access_key_id.startswith(("AKIA", "ASIA"))
    events = step("events", list_inspection_events.sync_detailed(inspection.id, client=client), 200, EventPage)
    assert events.items, "a run with new clusters records its events"
    step("an event", get_event.sync_detailed(events.items[0].id, client=client), 200, EventView)
    missing = step("unknown run", get_run.sync_detailed(uuid.uuid4(), client=client), 404, ErrorBody)
    assert missing.error.code == "not_found"

    changed = step("update", update_inspection.sync_detailed(
        inspection.id, client=client, body=NewInspection.from_dict({"description": "through a generated client"})),
        200, InspectionView)
    assert changed.description == "through a generated client"

    # Func's contract: the trigger id in the URL is the credential, no token needed. It is shown
    # once, in the answer that made it; reading the inspection never shows it again.
    trigger_id = inspection.trigger_id
    assert isinstance(trigger_id, str), inspection
    assert not isinstance(get_inspection.sync_detailed(inspection.id, client=client).parsed.trigger_id, str)
    kwargs = FuncKwargs(window_start=window.window_start, window_end=window.window_end, dry_run=True)
    started = step("Func async call", bat_post.sync_detailed(trigger_id, client=anonymous, body=FuncCall(kwargs=kwargs)),
                   200, FuncBoxed)
    run_id = started.data["id"]
    for _ in range(200):
        if get_run.sync_detailed(run_id, client=client).parsed.status.value not in ("queued", "running"):
            break
        time.sleep(0.05)
    synced = step("Func sync call", al_post.sync_detailed(trigger_id, client=anonymous, body=FuncCall(kwargs=kwargs)),
                  200, Run)
    assert synced.dry_run and synced.trigger.value == "func", synced

    step("delete", delete_inspection.sync_detailed(inspection.id, client=client), 204, type(None))
    print(f"generated client: {len(steps)} calls answered and parsed as documented")


if __name__ == "__main__":
    if sys.argv[1:2] == ["examples"] and len(sys.argv) == 3:
        check_examples(sys.argv[2])
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 4:
        drive_client(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
