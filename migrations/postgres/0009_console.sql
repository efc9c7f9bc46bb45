-- The web console: a cluster's page charts the runs that found it, and the event history
-- lists events newest first, of all inspections or of one cloud account across inspections.
create index run_clusters_cluster_idx on run_clusters (cluster_id);
create index events_created_idx on events (created_at desc, id desc);
create index events_account_idx on events (account_id, created_at desc, id desc);
