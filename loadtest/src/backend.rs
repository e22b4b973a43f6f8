//! `myriad-load backend`: a stub application backend for measuring what
//! myriad's hooks cost. It allows every hook (connect, refresh, join,
//! publish unchanged, rpc with an empty reply) after `--delay`, acknowledges
//! webhook batches, counts what it answered, and prints the counts as one
//! JSON line when it stops (after `--run-for`, or on Ctrl-C / SIGTERM).
//!
//! Point myriad at it with a config whose hooks are `http://LISTEN/<hook>`
//! (`connect`, `refresh`, `join`, `publish`, `rpc`) and webhooks
//! `http://LISTEN/events`. It checks no signatures: it measures myriad.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;

use crate::cli::BackendArgs;

struct Stub {
    delay: Duration,
    counts: Mutex<BTreeMap<String, u64>>,
}

async fn answer(State(stub): State<Arc<Stub>>, Path(hook): Path<String>) -> Response {
    let body = match hook.as_str() {
        "connect" | "join" | "publish" => r#"{"result":{}}"#,
        "rpc" => r#"{"result":{"response":{}}}"#,
        "refresh" => r#"{"result":{"expires_in":3600}}"#,
        "events" => "",
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    *stub.counts.lock().entry(hook.clone()).or_default() += 1;
    if !stub.delay.is_zero() {
        tokio::time::sleep(stub.delay).await;
    }
    if body.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub async fn serve(args: BackendArgs) -> anyhow::Result<()> {
    let stub = Arc::new(Stub {
        delay: args.delay,
        counts: Mutex::new(BTreeMap::new()),
    });
    let app = axum::Router::new()
        .route("/{hook}", post(answer))
        .with_state(Arc::clone(&stub));
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    eprintln!("backend stub listening on {}", listener.local_addr()?);
    let stop = async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        let run_for = async {
            match args.run_for {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = run_for => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    println!("{}", serde_json::to_string(&*stub.counts.lock())?);
    Ok(())
}
