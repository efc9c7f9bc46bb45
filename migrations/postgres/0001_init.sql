-- What to watch: one row per registered inspection.
create table inspections (
    id uuid primary key,
    name text not null,
    description text not null default '',
    enabled boolean not null default true,
    -- log groups, AWS access (without secrets), windows, strategy, ignore rules, alert policy
    settings jsonb not null,
    -- write-only credentials; never returned by the API
    secrets jsonb not null default '{}',
    -- the newest run, denormalised so listing inspections needs no per-row query
    last_run_id uuid,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint inspections_name_key unique (name)
);

create index inspections_created_idx on inspections (created_at, id);

-- One inspection of one window and what it found.
create table runs (
    id uuid primary key,
    inspection_id uuid not null references inspections (id) on delete cascade,
    status text not null,
    trigger text not null,
    trace_id text,
    -- the service process that runs it (informational)
    owner text,
    dry_run boolean not null,
    explicit_window boolean not null,
    -- the caller's request, kept so a queued run can be executed and explained later
    request jsonb not null,
    window_start timestamptz,
    window_end timestamptz,
    skipped_start timestamptz,
    skipped_end timestamptz,
    created_at timestamptz not null,
    started_at timestamptz,
    finished_at timestamptz,
    -- refreshed while running; a stale heartbeat means the process died
    heartbeat_at timestamptz,
    records_scanned bigint not null default 0,
    error_records bigint not null default 0,
    malformed_records bigint not null default 0,
    ignored_records bigint not null default 0,
    clusters_total bigint not null default 0,
    clusters_new bigint not null default 0,
    new_error_records bigint not null default 0,
    baseline_clusters bigint not null default 0,
    aws_api_calls bigint not null default 0,
    log_groups jsonb not null,
    error text,
    report jsonb
);

-- At most one queued or running run per inspection, across every instance of the service.
create unique index runs_one_active_idx on runs (inspection_id) where status in ('queued', 'running');
create index runs_inspection_created_idx on runs (inspection_id, created_at desc, id desc);
create index runs_created_idx on runs (created_at desc, id desc);

-- Error clusters an inspection knows; a fingerprint not in here is new.
create table clusters (
    id uuid primary key,
    inspection_id uuid not null references inspections (id) on delete cascade,
    fingerprint text not null,
    account_id text not null,
    region text not null,
    event_source text not null,
    event_name text not null,
    error_code text not null,
    template text not null,
    total_count bigint not null,
    first_seen timestamptz not null,
    last_seen timestamptz not null,
    -- learned from a first run's baseline read rather than reported as new
    baseline boolean not null,
    discovered_at timestamptz not null,
    discovered_run_id uuid,
    last_run_id uuid,
    top_principals jsonb not null,
    top_source_ips jsonb not null,
    sample_event_ids jsonb not null,
    sample_message text not null,
    sample_record jsonb,
    constraint clusters_fingerprint_key unique (inspection_id, fingerprint)
);

create index clusters_discovered_idx on clusters (inspection_id, discovered_at desc, id desc);

-- The clusters of each run, with their counts in that run's window.
create table run_clusters (
    run_id uuid not null references runs (id) on delete cascade,
    fingerprint text not null,
    -- null for a dry run's cluster that was never recorded as known
    cluster_id uuid references clusters (id) on delete set null,
    is_new boolean not null,
    account_id text not null,
    region text not null,
    event_source text not null,
    event_name text not null,
    error_code text not null,
    template text not null,
    count bigint not null,
    first_seen timestamptz not null,
    last_seen timestamptz not null,
    top_principals jsonb not null,
    top_source_ips jsonb not null,
    sample_event_ids jsonb not null,
    sample_message text not null,
    constraint run_clusters_pkey primary key (run_id, fingerprint)
);

create index run_clusters_order_idx on run_clusters (run_id, is_new desc, count desc, fingerprint);

-- Newest activity of each access key an inspection has seen.
create table access_keys (
    inspection_id uuid not null references inspections (id) on delete cascade,
    access_key_id text not null,
    principal_arn text not null,
    account_id text not null,
    first_seen timestamptz not null,
    last_seen timestamptz not null,
    last_event_name text not null,
    last_source_ip text not null,
    total_events bigint not null,
    last_run_id uuid,
    constraint access_keys_pkey primary key (inspection_id, access_key_id)
);

create index access_keys_last_seen_idx on access_keys (inspection_id, last_seen desc, access_key_id);

-- Per log group: how far it has been read, and whether its baseline was read.
create table log_group_state (
    inspection_id uuid not null references inspections (id) on delete cascade,
    log_group text not null,
    -- end of the last default window read completely
    watermark timestamptz,
    -- the baseline was read up to this time (null: not yet)
    baseline_until timestamptz,
    updated_at timestamptz not null,
    constraint log_group_state_pkey primary key (inspection_id, log_group)
);
