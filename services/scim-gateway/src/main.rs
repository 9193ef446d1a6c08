//! The scim-gateway binary.

use clap::Parser;
use scim_gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init();
    let config = Config::parse();
    Application::build(config).await?.run_until(infra::shutdown_signal()).await
}
