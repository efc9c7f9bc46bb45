use clap::Parser;

use cloudtrail_inspector::config::{Cli, Command};
use cloudtrail_inspector::server::serve;
use cloudtrail_inspector::telemetry;

/// jemalloc, because it gives memory back: glibc's malloc kept the ~300 MB a burst of 10,000
/// connections had used long after they were gone (BENCHMARKS.md, "Slow clients").
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    // Before the options are parsed: clap reads the environment, and `.env` only fills in
    // what the environment does not already say. Only the working directory's: a file found
    // in some parent directory would surprise.
    let dotenv = match dotenvy::from_path(".env") {
        Ok(()) => Some(std::path::PathBuf::from(".env")),
        Err(e) if e.not_found() => None,
        Err(e) => anyhow::bail!("could not read .env: {e}"),
    };
    let cli = Cli::parse();
    return_freed_memory();
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(run(cli, dotenv));
    // What still runs when a command has returned (a request waiting for a run that shutdown
    // declared interrupted, that run's AWS call, a DNS lookup) ends with the process: dropping
    // the runtime would wait for its blocking tasks, past the shutdown's documented bound.
    runtime.shutdown_timeout(std::time::Duration::from_millis(50));
    result
}

/// jemalloc returns freed pages to the system only while something allocates, unless its
/// background thread purges them: an idle service after an attack would otherwise keep them.
/// `_RJEM_MALLOC_CONF` still overrides the decay times (`dirty_decay_ms`, default 10 s).
fn return_freed_memory() {
    #[cfg(unix)]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("warning: freed memory is returned to the system only while allocating: {e}");
    }
}

async fn run(cli: Cli, dotenv: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Openapi) => {
            let doc = cloudtrail_inspector::http::openapi();
            println!("{}", doc.to_pretty_json()?);
            Ok(())
        }
        Some(Command::Migrate(db)) => {
            telemetry::init(config_log_format());
            let store = db.open().await?;
            tracing::info!(backend = store.backend(), "migrations applied");
            Ok(())
        }
        Some(Command::RotateSecrets(db)) => {
            telemetry::init(config_log_format());
            let store = db.open().await?;
            let n = cloudtrail_inspector::server::rotate_secrets(&store).await?;
            tracing::info!(inspections = n, "credentials sealed with the current key");
            Ok(())
        }
        Some(Command::Backup(args)) => {
            anyhow::ensure!(!args.file.exists(), "{} exists; the backup goes to a new file", args.file.display());
            let store = args.db.open_existing().await?;
            let done = store.backup(&args.file).await;
            store.close().await;
            done?;
            println!("{} backed up to {}", store.backend(), args.file.display());
            Ok(())
        }
        Some(Command::RotateShareKey(args)) => {
            telemetry::init(config_log_format());
            if args.share_key.is_some() {
                anyhow::bail!("SHARE_KEY is set: put a new key there (openssl rand -base64 32) and restart");
            }
            let path = cloudtrail_inspector::share::ShareKey::rotate_file(&args.data_dir)?;
            tracing::info!(path = %path.display(), "new share key written; restart the service to revoke the old links");
            Ok(())
        }
        Some(Command::Generate(args)) => generate(args),
        Some(Command::Scan(args)) => {
            telemetry::init_quiet();
            let code = cloudtrail_inspector::scan::run(args).await;
            std::process::exit(code);
        }
        Some(Command::Serve(args)) => {
            telemetry::init(args.log_format);
            log_dotenv(dotenv.as_deref());
            serve(args).await
        }
        None => {
            telemetry::init(cli.serve.log_format);
            log_dotenv(dotenv.as_deref());
            serve(cli.serve).await
        }
    }
}

fn config_log_format() -> cloudtrail_inspector::telemetry::LogFormat {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => cloudtrail_inspector::telemetry::LogFormat::Json,
        _ => cloudtrail_inspector::telemetry::LogFormat::Pretty,
    }
}

/// `generate` adds files next to whatever a directory holds, and a scan of it then reads both:
/// writing into a directory with files in it must be asked for.
fn refuse_non_empty(dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    let has_files = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => anyhow::bail!("cannot read {}: {e}", dir.display()),
    };
    if has_files && !force {
        anyhow::bail!(
            "{} is not empty: generated files would be mixed with what is there. Choose an empty \
             directory, or pass --force to add to it",
            dir.display()
        );
    }
    Ok(())
}

fn log_dotenv(path: Option<&std::path::Path>) {
    if let Some(path) = path {
        tracing::info!(path = %path.display(), "settings read from .env, under the environment's");
    }
}

/// `generate`: synthetic CloudTrail files in CloudTrail's S3 layout.
fn generate(args: cloudtrail_inspector::config::GenerateArgs) -> anyhow::Result<()> {
    refuse_non_empty(&args.out, args.force)?;
    let cfg = cloudtrail_inspector::synth::SynthConfig {
        seed: args.seed,
        accounts: args.accounts as usize,
        regions: args.regions as usize,
        error_ratio: args.error_ratio.clamp(0.0, 1.0),
        start: args.start,
        records_per_second: args.records as f64 / (f64::from(args.span_minutes) * 60.0),
        ..Default::default()
    };
    let mut synth = cloudtrail_inspector::synth::Synth::new(cfg);
    let summary =
        cloudtrail_inspector::synth::write_cloudtrail_files(&args.out, &mut synth, args.records, args.per_file)?;
    println!(
        "wrote {} records ({} MB of JSON) in {} files under {}",
        summary.records,
        summary.record_bytes / 1_000_000,
        summary.files,
        args.out.display()
    );
    Ok(())
}
