//! Command line and environment configuration.
//!
//! Every option is a flag and an environment variable, so the same binary is configured the
//! same way from a shell, a `.env` file, docker-compose or a Kubernetes manifest.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::HttpSettings;
use crate::http::conn::ServeSettings;
use crate::http::console::ConsoleSettings;
use crate::model::Secret;
use crate::outbox::EventSettings;
use crate::runner::RunnerSettings;
use crate::scheduler::ScheduleSettings;
use crate::source::cloudwatch::CloudWatchSettings;
pub use crate::telemetry::LogFormat;

/// The default listen address: the one the settings' default public URL points at.
fn default_listen() -> &'static str {
    EventSettings::DEFAULT_PUBLIC_URL.trim_start_matches("http://")
}

/// Where options come from besides flags, for every `--help` that has options.
pub const ENV_HELP: &str = "Every option can also be given as its environment variable, or in a `.env` file \
    in the working directory (KEY=value lines, as in .env.example). Variables set in the environment win over \
    the file, and flags over both.";

/// Watches AWS CloudTrail (through CloudWatch Logs) for new kinds of errors and keeps the
/// history of what it found.
#[derive(Debug, Parser)]
#[command(name = "cloudtrail-inspector", version, args_conflicts_with_subcommands = true, after_help = ENV_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options for `serve`, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Parsed once per process, so the size of the `serve` variant costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default when no subcommand is given).
    #[command(after_help = ENV_HELP)]
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    #[command(after_help = ENV_HELP)]
    Migrate(DatabaseArgs),
    /// Print the OpenAPI document of the HTTP API and exit.
    Openapi,
    /// Seal every stored credential again with the current ENCRYPTION_KEY (after a rotation).
    #[command(after_help = ENV_HELP)]
    RotateSecrets(DatabaseArgs),
    /// Write a consistent copy of the SQLite database to a new file, also while the service
    /// runs (a copy of the `.db` file alone may miss recent writes). For Postgres it names the
    /// tool to use instead: pg_dump.
    #[command(after_help = ENV_HELP)]
    Backup(BackupArgs),
    /// Replace `<data-dir>/share.key` with a new key: after a restart, every console share link
    /// and session signed with the old key stops working.
    #[command(after_help = ENV_HELP)]
    RotateShareKey(ShareKeyArgs),
    /// Write realistic synthetic CloudTrail files (CloudTrail's S3 layout, gzipped) to try the
    /// service or `scan` on: several accounts and principals, benign and suspicious errors,
    /// failed console sign-ins.
    Generate(GenerateArgs),
    /// Inspect CloudTrail files or a CloudWatch Logs log group once and print the report.
    ///
    /// Exit status, so it can gate a pipeline: 0 everything was read and no error cluster is
    /// new; 3 new error clusters were found; 2 none were found, but some input could not be
    /// read (a file, the log group's access-key activity: stderr names it); 1 the scan could
    /// not be done (bad arguments, a target that does not exist or holds no CloudTrail files,
    /// nothing could be read, CloudWatch Logs refused or could not be reached).
    #[command(after_help = ENV_HELP)]
    Scan(ScanArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Database to keep inspections, runs and clusters in: `postgres://user:pass@host/db` or
    /// `sqlite://path/to/file.db`. Default: SQLite in `<data-dir>/cloudtrail-inspector.db`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,

    /// Directory of the embedded SQLite database (used when no DATABASE_URL is given).
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,

    /// Largest number of pooled database connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,

    /// Key that encrypts stored credentials: base64 of 32 bytes (`openssl rand -base64 32`).
    /// Default: `<data-dir>/encryption.key`, created on first start. Instances sharing a
    /// database must share the key.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: Option<Secret>,

    /// Former encryption keys (comma-separated), still accepted to open credentials while a
    /// rotation is under way.
    #[arg(long, env = "OLD_ENCRYPTION_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub old_encryption_keys: Vec<Secret>,

    /// Serve even though stored credentials were sealed with an encryption key that is not
    /// configured, because that key is lost for good. Those credentials are kept as they are
    /// (putting the key back opens them again); their inspections' runs fail until the
    /// credentials are entered again. Without it the service refuses to start, naming the key.
    #[arg(long, env = "ALLOW_UNREADABLE_SECRETS")]
    pub allow_unreadable_secrets: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The copy to write; it must not exist yet.
    pub file: std::path::PathBuf,

    #[command(flatten)]
    pub db: DatabaseArgs,
}

impl DatabaseArgs {
    /// Opens the configured database as it is: no migrations, no keys, and an embedded
    /// SQLite file that does not exist is an error rather than created empty.
    pub async fn open_existing(&self) -> anyhow::Result<crate::store::DynStore> {
        let url = self.url();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let path = std::path::Path::new(rest.split('?').next().unwrap_or(rest));
            anyhow::ensure!(path.is_file(), "no SQLite database at {}", path.display());
        }
        let cipher = std::sync::Arc::new(crate::crypto::SecretBox::ephemeral());
        crate::store::connect(&url, 2, cipher).await
    }

    /// Opens (and migrates) the configured store with the configured keys.
    pub async fn open(&self) -> anyhow::Result<crate::store::DynStore> {
        Ok(self.open_with_cipher().await?.0)
    }

    async fn open_with_cipher(
        &self,
    ) -> anyhow::Result<(crate::store::DynStore, std::sync::Arc<crate::crypto::SecretBox>)> {
        let cipher = std::sync::Arc::new(crate::crypto::SecretBox::from_config(
            self.encryption_key.as_ref(),
            &self.old_encryption_keys,
            &self.data_dir,
        )?);
        let store = crate::store::connect(&self.url(), self.database_max_connections, cipher.clone()).await?;
        store.migrate().await?;
        Ok((store, cipher))
    }

    /// Opens the store for serving: stored credentials sealed with a key that is not
    /// configured (a lost or replaced key file) stop the start, naming the key, unless
    /// `allow_unreadable` says the key is gone for good. Starting anyway would look healthy
    /// while every run of those inspections failed.
    pub async fn open_for_serving(&self, allow_unreadable: bool) -> anyhow::Result<crate::store::DynStore> {
        let (store, cipher) = self.open_with_cipher().await?;
        let unknown = store.unknown_sealing_keys().await?;
        if unknown.is_empty() {
            return Ok(store);
        }
        let keys: Vec<String> = unknown
            .iter()
            .map(|(kid, n)| format!("key id {kid} ({n} inspection{})", if *n == 1 { "" } else { "s" }))
            .collect();
        let keys = keys.join(", ");
        if allow_unreadable {
            tracing::warn!(
                missing_keys = %keys,
                "stored credentials were sealed with encryption keys that are not configured (ALLOW_UNREADABLE_SECRETS): \
                 they are kept as they are, and those inspections' runs fail until their credentials are entered again"
            );
            return Ok(store);
        }
        // The key file a fresh start just made would otherwise take the place of the lost one.
        if let Some(created) = cipher.created_key_file() {
            let _ = std::fs::remove_file(created);
        }
        anyhow::bail!(
            "stored credentials were sealed with an encryption key that is not configured: {keys}. Restore it as \
             ENCRYPTION_KEY, in OLD_ENCRYPTION_KEYS, or as {} (instances sharing a database need the same key). If \
             it is lost for good, start with ALLOW_UNREADABLE_SECRETS=true: those credentials are kept as they are and \
             their inspections' runs fail until the credentials are entered again",
            self.data_dir.join("encryption.key").display()
        )
    }

    /// The configured URL, or the embedded SQLite file under the data directory.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.expose().trim().is_empty() => url.expose().to_string(),
            _ => format!("sqlite://{}", self.data_dir.join("cloudtrail-inspector.db").display()),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ShareKeyArgs {
    /// Directory of the key file.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: std::path::PathBuf,

    /// A configured key, which this command cannot replace (it is only read, to say so).
    #[arg(long, env = "SHARE_KEY", hide_env_values = true)]
    pub share_key: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Args)]
pub struct ScanArgs {
    /// A directory or file of CloudTrail records (as delivered to S3, JSON arrays or JSON
    /// lines, optionally gzipped), `cloudwatch://<region>/<log-group>`, or
    /// `s3://<bucket>[/<prefix>]`: a trail's bucket and key prefix (the part before
    /// `AWSLogs/`), optionally followed by `/AWSLogs/[o-<org>/]<account>[/CloudTrail/<region>]`
    /// to read one account or region. S3 windows select files by delivery time.
    pub target: String,

    /// Only records at or after this time: RFC 3339 (`2026-01-31T08:00:00Z`) or an age (`2h`, `7d`).
    /// For `s3://`, files delivered at or after it.
    #[arg(long)]
    pub since: Option<String>,

    /// Only records before this time (for `s3://`, files delivered before it): RFC 3339 or an age.
    #[arg(long)]
    pub until: Option<String>,

    /// Shorthand for `--since <age>`: the last `1h`, `30m`, `2d`….
    #[arg(long, conflicts_with = "since")]
    pub lookback: Option<String>,

    /// Days before the window whose errors count as already known, not new.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=90))]
    pub baseline_days: u32,

    /// Database that remembers known clusters between scans (`sqlite://scan-state.db`,
    /// `postgres://…`). Without it every cluster of the first scan is new.
    #[arg(long)]
    pub state: Option<String>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,

    /// Leave these error codes out (repeatable), e.g. `ThrottlingException`.
    #[arg(long = "ignore-error-code")]
    pub ignore_error_codes: Vec<String>,

    /// For `cloudwatch://`: `filter_log_events` or `logs_insights`.
    #[arg(long, default_value = "filter_log_events")]
    pub strategy: String,

    /// For `cloudwatch://` and `s3://`: send calls here instead of AWS (LocalStack, MinIO, a
    /// test server); S3 is then addressed path-style.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,

    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,

    /// Files read at once, each decompressed and parsed by its own thread (default: every
    /// core). The report is the same whatever the number.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub jobs: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port the HTTP API listens on.
    #[arg(long = "listen", env = "LISTEN_ADDR", default_value = default_listen())]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub guance: GuanceArgs,

    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Bearer tokens for the management API (comma-separated; several allow rotation). Required
    /// to listen on anything but a loopback address.
    #[arg(long, env = "API_TOKEN", value_delimiter = ',', hide_env_values = true)]
    pub api_token: Vec<Secret>,

    /// Let inspections' `aws.endpoint_url` point at link-local addresses (169.254.0.0/16,
    /// fe80::/10) and cloud metadata services (fd00:ec2::254, metadata.google.internal…).
    /// Refused by default: a metadata service answers with this machine's own credentials.
    #[arg(long, env = "ALLOW_METADATA_ENDPOINTS")]
    pub allow_metadata_endpoints: bool,

    /// Directory under which inspections may read CloudTrail files (`source.kind = files`).
    /// Unset: file sources are refused, so API callers cannot read the machine's files.
    #[arg(long, env = "FILES_ROOT")]
    pub files_root: Option<std::path::PathBuf>,

    /// Log output: human-readable `pretty` or one JSON object per line (`json`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,

    /// How many runs may execute at once across all inspections; more wait as `queued`.
    #[arg(long, env = "RUN_CONCURRENCY", default_value_t = RunnerSettings::DEFAULT_RUN_CONCURRENCY as u32, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub run_concurrency: u32,

    /// How many log groups of one run are read at once.
    #[arg(long, env = "LOG_GROUP_CONCURRENCY", default_value_t = RunnerSettings::DEFAULT_LOG_GROUP_CONCURRENCY as u32, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub log_group_concurrency: u32,

    /// CloudWatch Logs FilterLogEvents calls per second allowed per account and region
    /// (AWS's hard quota is 5; all runs of this process share it).
    #[arg(long, env = "FILTER_LOG_EVENTS_RPS", default_value_t = CloudWatchSettings::DEFAULT_FILTER_LOG_EVENTS_RPS)]
    pub filter_log_events_rps: f64,

    /// Seconds a `?wait=true` run trigger waits before answering 202 with the run still going.
    #[arg(long, env = "RUN_WAIT_TIMEOUT_SECS", default_value_t = HttpSettings::DEFAULT_RUN_WAIT_TIMEOUT.as_secs())]
    pub run_wait_timeout_secs: u64,

    /// Seconds before a management API request is cut off with 408.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = HttpSettings::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub request_timeout_secs: u64,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = HttpSettings::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Seconds a client has to send a request's head (request line and headers), from when
    /// its connection is ready for one; slower connections are closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = ServeSettings::DEFAULT_HEADER_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout_secs: u64,

    /// Seconds a client has to send a request's body, on every route (408 past it).
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = HttpSettings::DEFAULT_BODY_READ_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_read_timeout_secs: u64,

    /// Client connections served at once; more are answered 503 and closed. Default: the
    /// process's open-file limit less 512 kept for the database, AWS and files.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Base URL users reach this service at, used in links to clusters (e.g.
    /// `https://inspector.example.com`). Defaults to `http://<listen>`.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Run inspections on their `schedule` (`on`), or leave scheduling to an outside caller
    /// such as DataFlux Func or cron (`off`). Several instances on one Postgres may all be on:
    /// each slot starts once.
    #[arg(long, env = "SCHEDULER", value_enum, default_value_t = Toggle::On)]
    pub scheduler: Toggle,

    /// Scheduled starts are spread over this many seconds after each slot: every inspection
    /// gets a fixed offset in [0, spread) from its id, so inspections on the same schedule do
    /// not all call CloudWatch Logs in the same second.
    #[arg(long, env = "SCHEDULE_SPREAD_SECS", default_value_t = ScheduleSettings::DEFAULT_SPREAD.as_secs(), value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub schedule_spread_secs: u64,

    /// On SIGTERM or Ctrl-C: seconds to let runs in progress finish after the listener has
    /// closed. Runs still going then are marked `interrupted` (the next run reads their
    /// window) and the process exits.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_secs: u64,

    /// Key that signs the console's share links and sessions: base64 of 32 bytes
    /// (`openssl rand -base64 32`). Default: `<data-dir>/share.key`, created on first start.
    /// A new key revokes every share link and ends every console session; instances behind
    /// one address must share it.
    #[arg(long, env = "SHARE_KEY", hide_env_values = true)]
    pub share_key: Option<Secret>,

    /// Days a share link in a Guance event opens its console page without a token.
    #[arg(long, env = "SHARE_LINK_DAYS", default_value_t = (ConsoleSettings::DEFAULT_SHARE_TTL.as_secs() / 86_400) as u32, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub share_link_days: u32,

    /// Hours a console sign-in lasts.
    #[arg(long, env = "CONSOLE_SESSION_HOURS", default_value_t = (ConsoleSettings::DEFAULT_SESSION_TTL.as_secs() / 3600) as u32, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub console_session_hours: u32,

    /// Identity of this instance, stored as the owner of its runs, so that after a crash it
    /// marks the runs it left behind `interrupted` as soon as it starts again. Default: an
    /// id created in `<data-dir>/instance-id` on first start (and locked while running).
    /// Each running instance needs its own: give each replica its own DATA_DIR or INSTANCE_ID.
    #[arg(long, env = "INSTANCE_ID", value_parser = parse_instance_id)]
    pub instance_id: Option<String>,
}

fn parse_instance_id(s: &str) -> Result<String, String> {
    if crate::instance::valid_instance_id(s) {
        Ok(s.to_string())
    } else {
        Err("1-64 characters of A-Z, a-z, 0-9, '-', '_' and '.'".into())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    On,
    Off,
}

impl ServeArgs {
    /// `PUBLIC_URL`, or this service on its listen address; no trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_string()
    }
}

// The settings of each part, from the options. What no option sets keeps its `Default`.

impl From<&ServeArgs> for RunnerSettings {
    fn from(args: &ServeArgs) -> Self {
        RunnerSettings {
            run_concurrency: args.run_concurrency as usize,
            log_group_concurrency: args.log_group_concurrency as usize,
            cloudwatch: args.into(),
            events: args.into(),
            instance_id: args.instance_id.clone(),
            ..RunnerSettings::default()
        }
    }
}

impl From<&ServeArgs> for CloudWatchSettings {
    fn from(args: &ServeArgs) -> Self {
        CloudWatchSettings {
            filter_log_events_rps: args.filter_log_events_rps,
            allow_metadata_endpoints: args.allow_metadata_endpoints,
            ..CloudWatchSettings::default()
        }
    }
}

impl From<&ServeArgs> for EventSettings {
    fn from(args: &ServeArgs) -> Self {
        EventSettings {
            public_url: args.public_url(),
            guance_configured: args.guance.is_set(),
            expiry: Duration::from_secs(u64::from(args.guance.guance_event_expiry_hours) * 3600),
            share: None,
        }
    }
}

impl From<&ServeArgs> for ScheduleSettings {
    fn from(args: &ServeArgs) -> Self {
        ScheduleSettings {
            enabled: args.scheduler == Toggle::On,
            spread: Duration::from_secs(args.schedule_spread_secs),
        }
    }
}

impl From<&ServeArgs> for HttpSettings {
    fn from(args: &ServeArgs) -> Self {
        HttpSettings {
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            run_wait_timeout: Duration::from_secs(args.run_wait_timeout_secs),
            max_body_bytes: args.max_body_bytes,
            body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
            public_url: args.public_url(),
            files_root: args.files_root.clone(),
            api_tokens: crate::http::auth::Tokens::new(&args.api_token),
            guance_configured: args.guance.is_set(),
            schedule: args.into(),
            allow_metadata_endpoints: args.allow_metadata_endpoints,
            console: args.into(),
        }
    }
}

impl From<&ServeArgs> for ServeSettings {
    fn from(args: &ServeArgs) -> Self {
        ServeSettings {
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            max_connections: args
                .max_connections
                .map_or_else(ServeSettings::default_max_connections, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

impl From<&ServeArgs> for ConsoleSettings {
    /// The durations; the key is read at start-up (`ShareKey::from_config`).
    fn from(args: &ServeArgs) -> Self {
        ConsoleSettings {
            share_ttl: Duration::from_secs(u64::from(args.share_link_days) * 86_400),
            session_ttl: Duration::from_secs(u64::from(args.console_session_hours) * 3600),
            ..ConsoleSettings::default()
        }
    }
}

/// Where events go: a Guance workspace. Without an API key the service runs the same and
/// records its events without sending them.
#[derive(Debug, Clone, Args)]
pub struct GuanceArgs {
    /// Guance site: default, aws, cn3, cn4, cn5, us1, eu1, ap1, cn6, or private (self-hosted;
    /// then give both URLs).
    #[arg(long, env = "GUANCE_NODE", value_enum, default_value_t = crate::guance::GuanceNode::Default)]
    pub guance_node: crate::guance::GuanceNode,

    /// OpenAPI base URL; overrides the node's.
    #[arg(long, env = "GUANCE_OPENAPI_URL")]
    pub guance_openapi_url: Option<String>,

    /// OpenWay (DataWay) base URL events are written to; overrides the node's.
    #[arg(long, env = "GUANCE_OPENWAY_URL")]
    pub guance_openway_url: Option<String>,

    /// Guance API key id (sent as `DF-API-KEY`).
    #[arg(long, env = "GUANCE_API_KEY_ID", hide_env_values = true)]
    pub guance_api_key_id: Option<Secret>,

    /// Guance API key.
    #[arg(long, env = "GUANCE_API_KEY", hide_env_values = true)]
    pub guance_api_key: Option<Secret>,

    /// Workspace token (`tkn_…`) for writing events; fetched with the API key when unset.
    #[arg(long, env = "GUANCE_WORKSPACE_TOKEN", hide_env_values = true)]
    pub guance_workspace_token: Option<Secret>,

    /// Hours an undelivered event is retried before it expires.
    #[arg(long, env = "GUANCE_EVENT_EXPIRY_HOURS", default_value_t = (EventSettings::DEFAULT_EXPIRY.as_secs() / 3600) as u32, value_parser = clap::value_parser!(u32).range(1..=720))]
    pub guance_event_expiry_hours: u32,

    /// Seconds between read-backs of each inspection from Guance, which adopt what was
    /// changed in Guance studio (configs, alert policies, enabled). Every run also reads its
    /// inspection back first.
    #[arg(long, env = "GUANCE_SYNC_INTERVAL_SECS", default_value_t = crate::outbox::Guance::DEFAULT_PULL_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub guance_sync_interval_secs: u64,
}

impl GuanceArgs {
    pub fn is_set(&self) -> bool {
        self.guance_api_key_id.is_some() || self.guance_api_key.is_some()
    }

    /// The validated settings, or None when Guance is not configured.
    pub fn settings(&self) -> anyhow::Result<Option<crate::guance::GuanceSettings>> {
        if !self.is_set() {
            return Ok(None);
        }
        let settings = crate::guance::GuanceSettings {
            node: self.guance_node,
            openapi_url: self.guance_openapi_url.clone(),
            openway_url: self.guance_openway_url.clone(),
            api_key_id: self.guance_api_key_id.clone().unwrap_or_else(|| Secret::new("")),
            api_key: self.guance_api_key.clone().unwrap_or_else(|| Secret::new("")),
            workspace_token: self.guance_workspace_token.clone(),
        };
        if let Err(e) = settings.validate() {
            let problems: Vec<String> = e.fields().iter().map(|(k, v)| format!("{}: {}", k, v.join(", "))).collect();
            anyhow::bail!("invalid Guance settings: {}", problems.join("; "));
        }
        Ok(Some(settings))
    }
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Directory to write `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/*.json.gz` under.
    pub out: std::path::PathBuf,

    /// How many records.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Seed: the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Distinct AWS accounts.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub accounts: u32,

    /// Distinct regions (at most 8).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub regions: u32,

    /// Share of records that are errors.
    #[arg(long, default_value_t = 0.10)]
    pub error_ratio: f64,

    /// Minutes of event time the records spread over.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=525_600))]
    pub span_minutes: u32,

    /// eventTime of the first record (RFC 3339).
    #[arg(long, default_value = "2026-01-15T08:00:00Z")]
    pub start: chrono::DateTime<chrono::Utc>,

    /// Records per file.
    #[arg(long, default_value_t = 500)]
    pub per_file: usize,

    /// Write into a directory that already holds files (they stay; new ones are added).
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each default is written once, next to its settings; the flags left out must give it.
    #[test]
    fn flags_left_out_give_the_settings_defaults() {
        let cli = Cli::try_parse_from(["cloudtrail-inspector"]).expect("no flags parse");
        let args = &cli.serve;

        let (runner, default) = (RunnerSettings::from(args), RunnerSettings::default());
        assert_eq!(runner.run_concurrency, default.run_concurrency);
        assert_eq!(runner.log_group_concurrency, default.log_group_concurrency);
        assert_eq!(runner.cloudwatch.filter_log_events_rps, default.cloudwatch.filter_log_events_rps);
        assert_eq!(runner.events.public_url, default.events.public_url);
        assert_eq!(runner.events.expiry, default.events.expiry);

        assert_eq!(ScheduleSettings::from(args), ScheduleSettings::default());

        let (http, default) = (HttpSettings::from(args), HttpSettings::default());
        assert_eq!(http.request_timeout, default.request_timeout);
        assert_eq!(http.run_wait_timeout, default.run_wait_timeout);
        assert_eq!(http.max_body_bytes, default.max_body_bytes);
        assert_eq!(http.public_url, default.public_url);
        assert_eq!(http.console.share_ttl, default.console.share_ttl);
        assert_eq!(http.console.session_ttl, default.console.session_ttl);
    }
}
