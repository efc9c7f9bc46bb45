use clap::Parser;

use cloudtrail_inspector::config::{Cli, Command};
use cloudtrail_inspector::{serve, telemetry};

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
            let n = cloudtrail_inspector::rotate_secrets(&store).await?;
            tracing::info!(inspections = n, "credentials sealed with the current key");
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

fn config_log_format() -> cloudtrail_inspector::config::LogFormat {
    match std::env::var("LOG_FORMAT").as_deref() {
        Ok("json") => cloudtrail_inspector::config::LogFormat::Json,
        _ => cloudtrail_inspector::config::LogFormat::Pretty,
    }
}
