-- SQLite form of migrations/postgres/0002_func_and_schedule.sql.
--
-- SQLite has no SHA-256: the service fills trigger_id_hash for these rows right after
-- migrating (see the store's `migrate`), before it serves a request.

-- The credential in `/api/v1/al/{trigger_id}` and `/api/v1/bat/{trigger_id}` URLs: 64 hex
-- characters of randomness.
alter table inspections add column trigger_id text not null default '';
update inspections set trigger_id = lower(hex(randomblob(32)));

-- Hex SHA-256 of trigger_id: calls look inspections up by it, so no comparison runs over the
-- secret itself.
alter table inspections add column trigger_id_hash text;
create unique index inspections_trigger_id_hash_key on inspections (trigger_id_hash);

-- One row per (inspection, slot) that some instance claimed. The primary key is what makes a
-- slot start once: claiming is an insert that does nothing on conflict.
create table schedule_slots (
    inspection_id blob not null references inspections (id) on delete cascade,
    -- the time the cron expression names (UTC), before the inspection's spread offset
    slot text not null,
    claimed_at text not null,
    -- the instance that claimed it (informational)
    owner text not null,
    -- claimed, started (run_id set), skipped (a run was in progress), failed
    outcome text not null,
    run_id blob,
    detail text,
    constraint schedule_slots_pkey primary key (inspection_id, slot)
);

create index schedule_slots_claimed_idx on schedule_slots (claimed_at);
