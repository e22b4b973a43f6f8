//! `myriad-load baseline-server`: the plain tokio-tungstenite broadcast
//! server every ratio in BENCHMARKS.md is measured against. The default is
//! the strong one (`strong`: one task per connection, a shared frame per
//! broadcast, batched writes with one flush, a bounded queue, small buffers);
//! `--naive` runs the shape people write first (`naive`), to show what those
//! choices buy. No protocol, no topics, no supervision in either: what is
//! left is the cost of WebSocket framing, syscalls and the scheduler.

mod naive;
mod strong;

use crate::cli::BaselineArgs;

pub async fn serve(args: BaselineArgs) -> anyhow::Result<()> {
    if args.naive {
        naive::serve(&args).await
    } else {
        strong::serve(&args).await
    }
}
