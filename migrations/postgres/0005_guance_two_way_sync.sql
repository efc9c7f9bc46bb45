-- Two-way sync with Guance studio: a self-built inspection can be edited in Guance (its
-- `configs`, alert policies, enabled switch), and those edits are adopted here.
--
-- state gains `deleted_in_guance`: the checker was deleted in Guance; the inspection stays,
-- and is registered again only when asked.

-- What the last sync left, as JSON (see `guance::sync::Memory`): the values this service
-- and Guance agreed on, and Guance's copy as it was read then. Null until the first sync
-- after this migration, which then treats this service's values as the ones to keep.
alter table guance_checkers add column sync_memory jsonb;
-- When Guance's copy was last read back (before runs, and periodically).
alter table guance_checkers add column last_pulled_at timestamptz;
-- The last change adopted from Guance: {"at", "changed_by": "guance", "fields", ...}.
alter table guance_checkers add column last_change jsonb;
