//! Native TLS on the public listener: wss:// with a certificate from a test
//! CA, refused handshakes counted, and a certificate swapped on disk picked
//! up for new connections while established sessions carry on.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::tls::TlsFiles;
use common::{poll_until, Client, TestServer, DEADLINE};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A client that trusts only `ca` (a PEM file).
fn connector(ca: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A Phoenix client over wss://, trusting `ca`.
async fn wss(
    s: &TestServer,
    ca: &str,
) -> Result<Client<tokio_rustls::client::TlsStream<TcpStream>>, String> {
    let tcp = TcpStream::connect(s.public).await.unwrap();
    let tls = connector(ca)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let url = format!(
        "wss://localhost:{}/socket/websocket?vsn=2.0.0",
        s.public.port()
    );
    let (ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Client::from_ws(ws))
}

#[tokio::test]
async fn wss_works_and_a_new_certificate_is_picked_up_without_dropping_sessions() {
    let tls = TlsFiles::new();
    let s = TestServer::start_with(|c| {
        c.tls_cert_file = Some(tls.path("server.pem").into());
        c.tls_key_file = Some(tls.path("server-key.pem").into());
    })
    .await;
    let mut first = wss(&s, &tls.path("ca.pem")).await.unwrap();
    let jr = first.join_ok("room:tls").await;
    let (reply, _) = first
        .push(&jr, "room:tls", "m", serde_json::json!({}))
        .await;
    assert_eq!(reply[4]["status"], "ok");

    // Plain WebSocket on a TLS port is a failed handshake, counted.
    let plain = tokio_tungstenite::connect_async(s.ws_url()).await;
    assert!(plain.is_err());
    s.wait_metric("myriad_handshakes_rejected_total{reason=\"tls\"}", 1.0)
        .await;

    // Rotate: a certificate from another CA is written over the old one.
    let other = TlsFiles::new();
    let (old_key, new_key) = (tls.path("server-key.pem"), other.path("server-key.pem"));
    std::fs::copy(other.path("server.pem"), tls.path("server.pem")).unwrap();
    std::fs::copy(new_key, old_key).unwrap();
    s.wait_metric("myriad_tls_reloads_total{result=\"ok\"}", 1.0)
        .await;
    assert!(
        wss(&s, &tls.path("ca.pem")).await.is_err(),
        "old CA no longer matches"
    );
    let mut second = wss(&s, &other.path("ca.pem")).await.unwrap();
    second.join_ok("room:tls").await;
    // The first session never noticed.
    first.sync().await;
    let (reply, _) = first
        .push(&jr, "room:tls", "m", serde_json::json!({}))
        .await;
    assert_eq!(reply[4]["status"], "ok");

    // A broken file is refused; the current certificate stays.
    std::fs::write(tls.path("server.pem"), "not a certificate").unwrap();
    assert!(
        poll_until(DEADLINE, || async {
            common::metric_value(
                &s.metrics().await,
                "myriad_tls_reloads_total{result=\"error\"}",
            ) == Some(1.0)
        })
        .await
    );
    assert!(wss(&s, &other.path("ca.pem")).await.is_ok());
    let _ = Duration::ZERO;
}

#[test]
fn config_check_refuses_half_or_broken_tls_settings() {
    let tls = TlsFiles::new();
    let junk = tls.dir().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    for (args, key) in [
        (
            vec!["--tls-cert-file", &tls.path("server.pem")],
            "tls_cert_file",
        ),
        (
            vec![
                "--tls-cert-file",
                junk.to_str().unwrap(),
                "--tls-key-file",
                &tls.path("server-key.pem"),
            ],
            "tls_cert_file",
        ),
        (vec!["--admin-tls"], "admin_tls"),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_myriad"));
        let out = common::without_myriad_env(&mut cmd)
            .args(common::SERVE_ON_FREE_PORTS)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{args:?}: {err}");
    }
}
