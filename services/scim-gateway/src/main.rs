//! The scim-gateway binary.

use clap::Parser;
use scim_gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = telemetry::init("scim-gateway");
    let config = Config::parse();
    let result = async { Application::build(config).await?.run_until(infra::shutdown_signal()).await }.await;
    telemetry.shutdown();
    result
}
