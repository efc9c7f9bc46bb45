-- The web console: a cluster's page charts the runs that found it, and an event's page lists
-- the events of the same cloud account across inspections.
create index run_clusters_cluster_idx on run_clusters (cluster_id);
create index events_account_idx on events (account_id, created_at desc, id desc);
