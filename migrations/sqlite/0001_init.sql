-- SQLite form of migrations/postgres/0001_init.sql: same tables, SQLite's types.
-- sqlx stores uuids as 16-byte blobs, timestamps as RFC 3339 text (UTC, so text order is time
-- order) and JSON as text.

-- What to watch: one row per registered inspection.
create table inspections (
    id blob primary key,
    name text not null,
    description text not null default '',
    enabled integer not null default 1,
    -- log groups, AWS access (without secrets), windows, strategy, ignore rules, alert policy
    settings text not null,
    -- write-only credentials; never returned by the API
    secrets text not null default '{}',
    -- the newest run, denormalised so listing inspections needs no per-row query
    last_run_id blob,
    created_at text not null,
    updated_at text not null,
    constraint inspections_name_key unique (name)
);

create index inspections_created_idx on inspections (created_at, id);

-- One inspection of one window and what it found.
create table runs (
    id blob primary key,
    inspection_id blob not null references inspections (id) on delete cascade,
    status text not null,
    trigger text not null,
    trace_id text,
    -- the service process that runs it (informational)
    owner text,
    dry_run integer not null,
    explicit_window integer not null,
    -- the caller's request, kept so a queued run can be executed and explained later
    request text not null,
    window_start text,
    window_end text,
    skipped_start text,
    skipped_end text,
    created_at text not null,
    started_at text,
    finished_at text,
    -- refreshed while running; a stale heartbeat means the process died
    heartbeat_at text,
    records_scanned integer not null default 0,
    error_records integer not null default 0,
    malformed_records integer not null default 0,
    ignored_records integer not null default 0,
    clusters_total integer not null default 0,
    clusters_new integer not null default 0,
    new_error_records integer not null default 0,
    baseline_clusters integer not null default 0,
    aws_api_calls integer not null default 0,
    log_groups text not null,
    error text,
    report text
);

-- At most one queued or running run per inspection, across every instance of the service.
create unique index runs_one_active_idx on runs (inspection_id) where status in ('queued', 'running');
create index runs_inspection_created_idx on runs (inspection_id, created_at desc, id desc);
create index runs_created_idx on runs (created_at desc, id desc);

-- Error clusters an inspection knows; a fingerprint not in here is new.
create table clusters (
    id blob primary key,
    inspection_id blob not null references inspections (id) on delete cascade,
    fingerprint text not null,
    account_id text not null,
    region text not null,
    event_source text not null,
    event_name text not null,
    error_code text not null,
    template text not null,
    total_count integer not null,
    first_seen text not null,
    last_seen text not null,
    -- learned from a first run's baseline read rather than reported as new
    baseline integer not null,
    discovered_at text not null,
    discovered_run_id blob,
    last_run_id blob,
    top_principals text not null,
    top_source_ips text not null,
    sample_event_ids text not null,
    sample_message text not null,
    sample_record text,
    constraint clusters_fingerprint_key unique (inspection_id, fingerprint)
);

create index clusters_discovered_idx on clusters (inspection_id, discovered_at desc, id desc);

-- The clusters of each run, with their counts in that run's window.
create table run_clusters (
    run_id blob not null references runs (id) on delete cascade,
    fingerprint text not null,
    -- null for a dry run's cluster that was never recorded as known
    cluster_id blob references clusters (id) on delete set null,
    is_new integer not null,
    account_id text not null,
    region text not null,
    event_source text not null,
    event_name text not null,
    error_code text not null,
    template text not null,
    count integer not null,
    first_seen text not null,
    last_seen text not null,
    top_principals text not null,
    top_source_ips text not null,
    sample_event_ids text not null,
    sample_message text not null,
    constraint run_clusters_pkey primary key (run_id, fingerprint)
);

create index run_clusters_order_idx on run_clusters (run_id, is_new desc, count desc, fingerprint);

-- Newest activity of each access key an inspection has seen.
create table access_keys (
    inspection_id blob not null references inspections (id) on delete cascade,
    access_key_id text not null,
    principal_arn text not null,
    account_id text not null,
    first_seen text not null,
    last_seen text not null,
    last_event_name text not null,
    last_source_ip text not null,
    total_events integer not null,
    last_run_id blob,
    constraint access_keys_pkey primary key (inspection_id, access_key_id)
);

create index access_keys_last_seen_idx on access_keys (inspection_id, last_seen desc, access_key_id);

-- Per log group: how far it has been read, and whether its baseline was read.
create table log_group_state (
    inspection_id blob not null references inspections (id) on delete cascade,
    log_group text not null,
    -- end of the last default window read completely
    watermark text,
    -- the baseline was read up to this time (null: not yet)
    baseline_until text,
    updated_at text not null,
    constraint log_group_state_pkey primary key (inspection_id, log_group)
);
