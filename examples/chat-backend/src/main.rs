//! An application backend for myriad, to show the hooks and webhooks doing
//! real work (README "Your backend"):
//!
//! - `POST /login` signs a user up or in and sets a `sid` cookie; the connect
//!   hook accepts that cookie (or `sid` in the socket params: myriad keeps
//!   `token` for its own JWTs);
//! - the join hook keeps room membership: `chat:lobby` is open, a new room
//!   belongs to its first visitor, others need its invite code once;
//! - the publish hook refuses banned words, stores every message in SQLite and
//!   broadcasts it with its id, author and time;
//! - the rpc hook answers `load_more` with older messages from the database;
//! - webhook events are stored once per id.
//!
//! Every request from myriad is checked against its signature.

mod db;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{json, Value};

use db::Db;

/// Words the publish hook refuses.
const BANNED: [&str; 2] = ["darn", "heck"];
/// Longest message accepted.
const MAX_BODY: usize = 2000;

#[derive(Parser)]
#[command(about = "Example application backend for myriad's hooks and webhooks")]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The SQLite database file (created if missing).
    #[arg(long, default_value = "chat-backend.db")]
    db: PathBuf,
    /// `[hooks] secret` in myriad's config: hook requests must carry its signature.
    #[arg(long, env = "HOOK_SECRET")]
    hook_secret: String,
    /// `[webhooks] secret` in myriad's config.
    #[arg(long, env = "WEBHOOK_SECRET")]
    webhook_secret: String,
    /// myriad's public address, for the link on the login page.
    #[arg(long, default_value = "http://localhost:4000")]
    myriad: String,
}

struct App {
    db: Db,
    hook_secret: String,
    webhook_secret: String,
    myriad: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let app = Arc::new(App {
        db: Db::open(&args.db, &args.hook_secret)?,
        hook_secret: args.hook_secret,
        webhook_secret: args.webhook_secret,
        myriad: args.myriad,
    });
    let router = Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/myriad/connect", post(connect))
        .route("/myriad/refresh", post(refresh))
        .route("/myriad/join", post(join))
        .route("/myriad/publish", post(publish))
        .route("/myriad/rpc", post(rpc))
        .route("/myriad/events", post(events))
        .route("/events/counts", get(event_counts))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // One plain line for scripts and tests to find the address in.
    eprintln!("chat backend listening on {}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

fn allow(result: Value) -> Response {
    Json(json!({ "result": result })).into_response()
}

fn deny(reason: &str) -> Response {
    Json(json!({"error": {"reason": reason}})).into_response()
}

/// The request's JSON body, if myriad signed it with `secret`.
fn signed(
    secret: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, (StatusCode, &'static str)> {
    let sig = headers
        .get(myriad::webhooks::signature::HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !myriad::webhooks::signature::verify(secret.as_bytes(), sig, body, db::now(), 300) {
        return Err((StatusCode::UNAUTHORIZED, "bad signature"));
    }
    serde_json::from_slice(body).map_err(|_| (StatusCode::BAD_REQUEST, "not JSON"))
}

async fn page(State(app): State<Arc<App>>) -> Html<String> {
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>Log in</title>
<form method="post" action="/login">
  <input name="user" placeholder="name" required> <input name="password" type="password" placeholder="password" required>
  <button>Log in</button>
</form>
<p>Then open <a href="{0}/">{0}/</a>: the chat page connects with your <code>sid</code> cookie.</p>"#,
        app.myriad
    ))
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

/// Form or JSON login; sets the `sid` cookie and answers the token.
async fn login(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed: Option<Login> = if json_body {
        serde_json::from_slice(&body).ok()
    } else {
        serde_urlencoded_login(&body)
    };
    let Some(form) = parsed else {
        return (StatusCode::BAD_REQUEST, "user and password").into_response();
    };
    match app.db.login(&form.user, &form.password) {
        Ok(token) => {
            let cookie = format!("sid={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=86400");
            (
                [(header::SET_COOKIE, cookie)],
                Json(json!({"token": token})),
            )
                .into_response()
        }
        Err(why) => (StatusCode::UNAUTHORIZED, why).into_response(),
    }
}

fn serde_urlencoded_login(body: &[u8]) -> Option<Login> {
    let text = std::str::from_utf8(body).ok()?;
    let mut user = None;
    let mut password = None;
    for pair in text.split('&') {
        let (k, v) = pair.split_once('=')?;
        let v = v.replace('+', " ");
        match k {
            "user" => user = Some(v),
            "password" => password = Some(v),
            _ => {}
        }
    }
    Some(Login {
        user: user?,
        password: password?,
    })
}

fn cookie(headers: &Value, name: &str) -> Option<String> {
    headers["cookie"].as_str()?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

async fn connect(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match signed(&app.hook_secret, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let token =
        cookie(&req["headers"], "sid").or_else(|| req["params"]["sid"].as_str().map(String::from));
    match token.and_then(|t| app.db.user_of(&t)) {
        Some(user) => allow(json!({"user": user, "expires_in": 3600, "topics": ["chat:*"]})),
        None => Json(json!({"error": {"reason": "log in first", "status": 401}})).into_response(),
    }
}

async fn refresh(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    match signed(&app.hook_secret, &headers, &body) {
        Ok(_) => allow(json!({"expires_in": 3600})),
        Err(r) => r.into_response(),
    }
}

fn room_of(topic: &Value) -> &str {
    topic
        .as_str()
        .and_then(|t| t.strip_prefix("chat:"))
        .unwrap_or("")
}

async fn join(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match signed(&app.hook_secret, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (room, user) = (room_of(&req["topic"]), req["user"].as_str().unwrap_or(""));
    match app.db.join(room, user, req["params"]["invite"].as_str()) {
        Ok(extra) => allow(json!({
            "response": extra,
            // Presence shows the logged-in name, whatever the client claims.
            "meta": {"name": user},
            "info": {"room": room},
        })),
        Err(why) => deny(&why),
    }
}

async fn publish(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match signed(&app.hook_secret, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (room, user) = (room_of(&req["topic"]), req["user"].as_str().unwrap_or(""));
    let text = req["payload"]["body"].as_str().unwrap_or("").trim();
    if text.is_empty() || text.len() > MAX_BODY {
        return deny("a message needs a body of at most 2000 bytes");
    }
    let lower = text.to_lowercase();
    if BANNED.iter().any(|w| lower.contains(w)) {
        return deny("message refused: mind your language");
    }
    match app.db.store(room, user, text) {
        Ok((id, at)) => allow(json!({
            "payload": {"id": id, "name": user, "body": text, "at": at},
            "response": {"id": id},
        })),
        Err(why) => deny(&why),
    }
}

async fn rpc(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let req = match signed(&app.hook_secret, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if req["event"] != "load_more" {
        return deny("unknown request");
    }
    let before = req["payload"]["before"].as_i64().unwrap_or(i64::MAX);
    match app.db.older(room_of(&req["topic"]), before, 20) {
        Ok(messages) => allow(json!({"response": {"messages": messages}})),
        Err(why) => deny(&why),
    }
}

async fn events(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let batch = match signed(&app.webhook_secret, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    for event in batch["events"].as_array().into_iter().flatten() {
        app.db.record_event(event);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn event_counts(State(app): State<Arc<App>>) -> Json<Value> {
    Json(app.db.event_counts())
}
