-- Records and templates: what runs count besides errors, and the version of the template
-- rules each cluster was made with.

-- Records read with a repair (a field of the wrong type, text that was not UTF-8), and
-- CloudTrail Insights events, per run.
alter table runs add column warned_records bigint not null default 0;
alter table runs add column insight_events bigint not null default 0;

-- A template, and so the fingerprint made of it, depends on the rules that made it. Clusters
-- stored before the rules were versioned were made with version 1. At start-up the service
-- re-templates clusters of an older version from their sample message, so that a change of
-- rules does not make known errors new.
alter table clusters add column template_version integer not null default 1;
