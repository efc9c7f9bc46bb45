-- Each cluster's severity level and the CIS rules it matches, shown wherever a cluster is:
-- rated by the run that found it (run_clusters) or last saw it (clusters). Rows written
-- before this migration are null here until the service rates them at start-up.
alter table clusters add column level text;
alter table clusters add column cis_rules jsonb;
alter table run_clusters add column level text;
alter table run_clusters add column cis_rules jsonb;

-- Only rows still to be rated are in these, so finding them stays cheap on every start-up.
create index clusters_unrated_idx on clusters (inspection_id) where cis_rules is null;
create index run_clusters_unrated_idx on run_clusters (run_id) where cis_rules is null;

-- Log groups that gave no records at all: how many default windows in a row, and when a run
-- last warned about it, so a group known to be idle is warned about once a day, not hourly.
alter table log_group_state add column empty_windows bigint not null default 0;
alter table log_group_state add column empty_warned_at timestamptz;
