-- Trigger ids are kept as their hash only. The clear id was stored beside its hash so the API
-- could show it on every read; anyone who could read the database (a backup, a replica, a
-- support dump) could then call every inspection's trigger URL. Calls already look
-- inspections up by the hash, so URLs in use keep working; the API shows an id once, in the
-- answers that create or rotate it.
alter table inspections drop column trigger_id;
