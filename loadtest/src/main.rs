//! myriad-load: the load generator. Scenarios arrive with the load-testing issue;
//! this skeleton fixes the binary name and CLI entry point.
use clap::Parser;

/// Load generator for Phoenix Channels V2 and raw WebSocket servers.
#[derive(Parser, Debug)]
#[command(name = "myriad-load", version, about)]
struct Cli {
    /// Server URL to drive, e.g. ws://127.0.0.1:4000/socket/websocket
    #[arg(long, default_value = "ws://127.0.0.1:4000/socket/websocket")]
    url: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "no scenario implemented yet (target {}); see the load-testing issue",
        cli.url
    )
}
