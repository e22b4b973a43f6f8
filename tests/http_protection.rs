//! The tower layers in front of the API and admin routes: load shedding at the
//! concurrency limit (503 + Retry-After, no queueing) and request timeouts (504).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{http_get, metric_value};
use myriad::metrics::Metrics;
use myriad::server::protect::protect;
use tokio::sync::Notify;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_shed_at_once() {
    let metrics = Metrics::new();
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let (r, e) = (Arc::clone(&release), Arc::clone(&entered));
    let router = Router::new().route(
        "/slow",
        get(move || {
            let (r, e) = (Arc::clone(&r), Arc::clone(&e));
            async move {
                e.notify_one();
                r.notified().await;
                "done"
            }
        }),
    );
    let base = serve(protect(
        router,
        1,
        Duration::from_secs(30),
        Arc::clone(&metrics),
    ))
    .await;
    let first = tokio::spawn({
        let url = format!("{base}/slow");
        async move { http_get(&url).await }
    });
    entered.notified().await;
    let resp = reqwest::get(format!("{base}/slow")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
    release.notify_one();
    assert_eq!(first.await.unwrap(), (200, "done".into()));
    let text = metrics.render();
    assert_eq!(
        metric_value(&text, "myriad_http_rejected_total{reason=\"overloaded\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn slow_requests_time_out_with_504() {
    let metrics = Metrics::new();
    let router = Router::new().route("/stuck", get(std::future::pending::<&'static str>));
    let base = serve(protect(
        router,
        8,
        Duration::from_millis(200),
        Arc::clone(&metrics),
    ))
    .await;
    let (status, _) = http_get(&format!("{base}/stuck")).await;
    assert_eq!(status, 504);
    let text = metrics.render();
    assert_eq!(
        metric_value(&text, "myriad_http_rejected_total{reason=\"timeout\"}"),
        Some(1.0)
    );
}
