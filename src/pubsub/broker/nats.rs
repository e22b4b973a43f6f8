//! The NATS link: transport over NATS core subjects, one subject per topic
//! with local members (names in `names`). Membership and presence travel on
//! `names::CONTROL` as over Redis. History stays node-local: NATS core keeps
//! nothing, and JetStream is not used (README, "Run a cluster").
//!
//! async-nats reconnects and resubscribes on its own; this task forwards the
//! queue to it, keeps one subscription task per topic, and mirrors the client's
//! connection state into the broker's health. An envelope queued while NATS
//! is away is dropped and counted, never awaited by a session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::backoff::Backoff;
use super::link::{drop_queued, LinkParts};
use super::security::{LinkSecurity, NatsLogin};
use super::{names, Envelope};

/// How often the link mirrors the client's connection state.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// How the client logs in and secures its connection: URL credentials or
/// a creds file or nkey seed; TLS when the URL says tls:// (with
/// `broker_tls_ca` and a client certificate when configured).
fn options(
    credentials: &Credentials,
    address: &str,
    security: &LinkSecurity,
) -> std::io::Result<async_nats::ConnectOptions> {
    let mut options = match (credentials, &security.nats) {
        (_, NatsLogin::Creds(text)) => async_nats::ConnectOptions::with_credentials(text)?,
        (_, NatsLogin::Nkey(seed)) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        (Credentials::None, NatsLogin::Url) => async_nats::ConnectOptions::new(),
        (Credentials::Token(t), NatsLogin::Url) => {
            async_nats::ConnectOptions::with_token(t.clone())
        }
        (Credentials::UserPassword(u, p), NatsLogin::Url) => {
            async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
        }
    };
    if address.starts_with("tls://") {
        options = options.require_tls(true);
    }
    if let Some(ca) = &security.ca {
        options = options.add_root_certificates(ca.path.clone());
    }
    if let Some((cert, key)) = &security.client {
        options = options.add_client_certificate(cert.path.clone(), key.path.clone());
    }
    Ok(options)
}

/// Run the link until its stop token is cancelled.
pub async fn run(url: String, security: LinkSecurity, mut parts: LinkParts) {
    let stop = parts.stop.clone();
    let mut backoff = Backoff::default();
    let (credentials, address) = split_credentials(&url);
    let client = loop {
        let options = match options(&credentials, &address, &security)
            .map(|o| o.connection_timeout(parts.state.timeout))
        {
            Ok(o) => o,
            Err(err) => {
                // The creds file was checked at start; a failure here is a bug.
                tracing::error!(error = %err, "invalid nats credentials; cluster delivery disabled");
                return;
            }
        };
        let connect = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(address.as_str());
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = connect => result,
        };
        match result {
            Ok(c) => break c,
            Err(err) => {
                parts.state.metrics.broker_errors.increment(1);
                tracing::warn!(error = %err, url = %address, "cannot reach nats");
                drop_queued(&mut parts);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
            }
        }
    };
    let mut subs: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    for topic in parts.handler.local_topics() {
        subscribe(&client, &parts, &mut subs, topic).await;
    }
    let control = match client.subscribe(names::CONTROL).await {
        Ok(mut sub) => {
            let (state, handler) = (Arc::clone(&parts.state), Arc::clone(&parts.handler));
            Some(tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    state.receive_control(&*handler, &msg.payload);
                }
            }))
        }
        Err(err) => {
            parts.state.metrics.broker_errors.increment(1);
            tracing::warn!(error = %err, "nats control subscription failed; presence stays node-local");
            None
        }
    };
    forward(&client, &mut parts, &mut subs).await;
    // The subscription tasks hold the node: end them with the link.
    for (_, task) in subs {
        task.abort();
    }
    if let Some(task) = control {
        task.abort();
    }
}

/// What `broker_url` carries before the host: `nats://user:password@host` or
/// `nats://token@host`.
#[derive(Debug, PartialEq, Eq)]
enum Credentials {
    None,
    Token(String),
    UserPassword(String, String),
}

/// The credentials in a NATS URL, and the URL without them (the client is
/// given them as options, so they never reach a log line with the address).
fn split_credentials(url: &str) -> (Credentials, String) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (Credentials::None, url.to_owned());
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (Credentials::None, url.to_owned());
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let address = format!("{scheme}://{host}");
    let credentials = match userinfo.split_once(':') {
        Some((u, p)) => Credentials::UserPassword(u.to_owned(), p.to_owned()),
        None => Credentials::Token(userinfo.to_owned()),
    };
    (credentials, address)
}

/// Forward envelopes, follow membership changes and health until stopped.
async fn forward(
    client: &async_nats::Client,
    parts: &mut LinkParts,
    subs: &mut HashMap<Arc<str>, JoinHandle<()>>,
) {
    let stop = parts.stop.clone();
    let mut health = tokio::time::interval(HEALTH_POLL);
    let mut was_up = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            env = parts.out.recv() => {
                let Some(env) = env else { return };
                parts.state.metrics.broker_queue_depth.decrement(1.0);
                if !parts.state.is_connected() {
                    parts.state.metrics.broker_dropped_disconnected.increment(1);
                    continue;
                }
                let (subject, payload) = match env {
                    Envelope::Publication { topic, frame } => {
                        (names::nats_subject(&topic), parts.state.publication(&topic, &frame))
                    }
                    Envelope::BinaryPublication { topic, frame } => {
                        (names::nats_subject(&topic), parts.state.binary_publication(&topic, &frame))
                    }
                    Envelope::Control(control) => {
                        (names::CONTROL.to_string(), parts.state.control(&control))
                    }
                    // Never sent: this link neither sequences history nor
                    // tracks occupancy.
                    Envelope::History { .. } | Envelope::PeerGone(_) => continue,
                };
                match client.publish(subject, payload.into()).await {
                    Ok(()) => parts.state.metrics.broker_published.increment(1),
                    Err(_) => parts.state.metrics.broker_errors.increment(1),
                }
            }
            change = parts.changes.recv() => {
                if change.is_none() { return }
                for topic in parts.state.take_changed() {
                    let wanted = parts.handler.has_local_members(&topic);
                    if wanted && !subs.contains_key(&topic) {
                        subscribe(client, parts, subs, topic).await;
                    } else if !wanted {
                        if let Some(task) = subs.remove(&topic) {
                            task.abort();
                        }
                    }
                }
            }
            _ = health.tick() => {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                parts.state.set_connected(up);
                if up && !was_up {
                    parts.handler.on_connected();
                } else if !up && was_up {
                    parts.state.metrics.broker_reconnects.increment(1);
                }
                was_up = up;
            }
        }
    }
}

async fn subscribe(
    client: &async_nats::Client,
    parts: &LinkParts,
    subs: &mut HashMap<Arc<str>, JoinHandle<()>>,
    topic: Arc<str>,
) {
    match client.subscribe(names::nats_subject(&topic)).await {
        Ok(mut sub) => {
            let (state, handler) = (Arc::clone(&parts.state), Arc::clone(&parts.handler));
            let t = Arc::clone(&topic);
            let task = tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    state.receive_publication(&*handler, &t, &msg.payload);
                }
            });
            subs.insert(topic, task);
        }
        Err(err) => {
            parts.state.metrics.broker_errors.increment(1);
            tracing::warn!(error = %err, topic = %topic, "nats subscribe failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://u:p@127.0.0.1:4222"),
            (
                Credentials::UserPassword("u".into(), "p".into()),
                "nats://127.0.0.1:4222".into()
            )
        );
        assert_eq!(
            split_credentials("tls://tok@nats.example:4222"),
            (
                Credentials::Token("tok".into()),
                "tls://nats.example:4222".into()
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            (Credentials::None, "nats://127.0.0.1:4222".into())
        );
    }
}
