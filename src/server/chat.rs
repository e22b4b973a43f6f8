//! The chat page at `/`: a small hand-written page and script, compiled into the
//! binary, that speak the Phoenix protocol over `/socket/websocket` on the
//! `chat:*` namespace (presence and history). Serves static text only.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("chat/index.html");
const SCRIPT: &str = include_str!("chat/chat.js");

pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
            }),
        )
        .route(
            "/chat.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
                    .into_response()
            }),
        )
}
