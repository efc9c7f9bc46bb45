//! The integration tests, in one binary: each module is one area of the service, driven
//! from outside through its public API, its HTTP routes or its process, against a real
//! Postgres, real SQLite files and the fake AWS and Guance servers in [`common`]. One binary
//! links the AWS SDK once instead of once per area.

mod common;

mod api_inspections;
mod architecture;
mod auth;
mod aws_errors;
mod aws_faults;
mod aws_path;
mod browser;
mod cli;
mod cluster_levels;
mod console;
mod db_restart;
mod empty_windows;
mod fake_cwl_server;
mod first_look;
mod func;
mod guance;
mod guance_parts;
mod guance_sync;
mod hostile_records;
mod observability;
mod openapi;
mod process_faults;
mod run_lists;
mod runs;
mod s3;
mod scan;
mod scheduler;
mod security;
mod server;
mod store;
mod template_upgrade;
