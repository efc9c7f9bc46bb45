-- Func-style trigger URLs and the built-in scheduler.
--
-- The new inspection settings (timeout_seconds, schedule, schedule_timezone) live in the
-- settings JSON; documents stored before them read as their defaults.

-- The credential in `/api/v1/al/{trigger_id}` and `/api/v1/bat/{trigger_id}` URLs: 64 hex
-- characters of randomness (two v4 uuids here, 32 random bytes when the service makes one).
alter table inspections add column trigger_id text;
update inspections set trigger_id = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
alter table inspections alter column trigger_id set not null;

-- Hex SHA-256 of trigger_id: calls look inspections up by it, so no comparison runs over the
-- secret itself.
alter table inspections add column trigger_id_hash text;
update inspections set trigger_id_hash = encode(sha256(convert_to(trigger_id, 'UTF8')), 'hex');
create unique index inspections_trigger_id_hash_key on inspections (trigger_id_hash);

-- One row per (inspection, slot) that some instance claimed. The primary key is what makes a
-- slot start once, however many instances share the database: claiming is an insert that
-- does nothing on conflict.
create table schedule_slots (
    inspection_id uuid not null references inspections (id) on delete cascade,
    -- the time the cron expression names (UTC), before the inspection's spread offset
    slot timestamptz not null,
    claimed_at timestamptz not null,
    -- the instance that claimed it (informational)
    owner text not null,
    -- claimed, started (run_id set), skipped (a run was in progress), failed
    outcome text not null,
    run_id uuid,
    detail text,
    constraint schedule_slots_pkey primary key (inspection_id, slot)
);

create index schedule_slots_claimed_idx on schedule_slots (claimed_at);
