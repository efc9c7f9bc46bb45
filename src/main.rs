use clap::Parser;

use cloudtrail_inspector::config::{Cli, Command};
use cloudtrail_inspector::server::serve;
use cloudtrail_inspector::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
        Some(Command::RotateShareKey(args)) => {
            telemetry::init(config_log_format());
            if args.share_key.is_some() {
                anyhow::bail!("SHARE_KEY is set: put a new key there (openssl rand -base64 32) and restart");
            }
            let path = cloudtrail_inspector::share::ShareKey::rotate_file(&args.data_dir)?;
            tracing::info!(path = %path.display(), "new share key written; restart the service to revoke the old links");
            Ok(())
        }
        Some(Command::Generate(args)) => {
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
            let summary = cloudtrail_inspector::synth::write_cloudtrail_files(
                &args.out,
                &mut synth,
                args.records,
                args.per_file,
            )?;
            println!(
                "wrote {} records ({} MB of JSON) in {} files under {}",
                summary.records,
                summary.record_bytes / 1_000_000,
                summary.files,
                args.out.display()
            );
            Ok(())
        }
        Some(Command::Scan(args)) => {
            telemetry::init_quiet();
            let code = cloudtrail_inspector::scan::run(args).await;
            std::process::exit(code);
        }
        Some(Command::Serve(args)) => {
            telemetry::init(args.log_format);
            serve(args).await
        }
        None => {
            telemetry::init(cli.serve.log_format);
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
