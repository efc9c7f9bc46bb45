-- SQLite form of migrations/postgres/0004_hardening.sql: trigger ids are kept as their hash
-- only; calls already look inspections up by it, so URLs in use keep working.
--
-- A row without a hash here got its trigger id from 0002 in this same migration run (the
-- service fills hashes in before it answers a call), so that id was never shown to anyone.
-- SQLite cannot compute SHA-256 to keep it: such a row gets a marker no id hashes to, and
-- its owner rotates the trigger id to get one.
update inspections set trigger_id_hash = 'unset:' || lower(hex(randomblob(32))) where trigger_id_hash is null;
alter table inspections drop column trigger_id;
