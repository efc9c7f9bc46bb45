-- SQLite form of migrations/postgres/0003_guance.sql.

-- Guance: the events runs produce (an outbox the delivery worker drains), the alerting state
-- of each dimension, and the registration of inspections as Guance self-built inspections.

-- One event of one run for one cloud account. Written in the same transaction as its run, so
-- an event exists exactly when its run's results do; delivered afterwards, retried until
-- sent or expired.
create table events (
    id blob primary key,
    -- df_event_id: stable for (inspection, run, account), so a retried write is the same event
    event_id text not null,
    inspection_id blob not null references inspections (id) on delete cascade,
    run_id blob not null references runs (id) on delete cascade,
    account_id text not null,
    -- df_status: ok, info, warning, error, critical
    status text not null,
    is_silent integer not null,
    -- pending, sending, sent, failed (a permanent refusal), expired, not_sent (silent, dry
    -- run, Guance not configured, level not notified)
    delivery_state text not null,
    delivery_note text,
    attempts integer not null default 0,
    next_attempt_at text,
    -- a delivery worker holds the event until then (several instances deliver each event once)
    claimed_until text,
    claimed_by text,
    last_error text,
    sent_at text,
    created_at text not null,
    expires_at text not null,
    fault_id text,
    -- the rendered event (fields, message, detail)
    event text not null,
    constraint events_event_id_key unique (event_id)
);

create index events_inspection_idx on events (inspection_id, created_at desc, id desc);
create index events_delivery_idx on events (delivery_state, next_attempt_at);
create index events_dimension_idx on events (inspection_id, account_id, created_at);
-- deleting an inspection cascades to its runs, and each run to its events
create index events_run_idx on events (run_id);

-- The alerting state of each dimension (inspection × cloud account): the open fault, when
-- an event was last sent, clusters carried from silenced events.
create table alert_dimensions (
    inspection_id blob not null references inspections (id) on delete cascade,
    account_id text not null,
    state text not null,
    updated_at text not null,
    constraint alert_dimensions_pkey primary key (inspection_id, account_id)
);

-- Each inspection as a self-built inspection in Guance. Rows outlive their inspection (no
-- foreign key) so that a deleted inspection's registration is still removed from Guance.
create table guance_checkers (
    ref_key text primary key,
    -- null once the inspection is deleted: the registration is then to be deleted
    inspection_id blob,
    -- rul_… once Guance has it
    checker_id text,
    -- pending, synced, failed, not_configured
    state text not null,
    error text,
    attempts integer not null default 0,
    next_attempt_at text not null,
    claimed_until text,
    synced_at text,
    updated_at text not null
);

create unique index guance_checkers_inspection_key on guance_checkers (inspection_id);
create index guance_checkers_due_idx on guance_checkers (state, next_attempt_at);
