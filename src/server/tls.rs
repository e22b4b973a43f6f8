//! TLS on the listeners (`tls_cert_file` / `tls_key_file`): rustls with the
//! ring provider, TLS 1.2 and 1.3 only, HTTP/1.1 by ALPN, no client
//! certificates. The certificate is loaded at start (a bad file stops the
//! node, with its key named) and reloaded without dropping a session on
//! SIGHUP and whenever the files change (checked every `RELOAD_POLL`): new
//! connections get the new certificate, established ones keep theirs. A
//! reload that fails keeps the old certificate, logs why and is counted.
//!
//! Owns the acceptor; the accept loop uses it (the handshake runs within
//! `handshake_timeout`, a failed one is a handshake rejection).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::protocol::TlsReload;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert_file {path:?}: {why}")]
    Cert { path: PathBuf, why: String },
    #[error("tls_key_file {path:?}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("tls_cert_file and tls_key_file do not match: {0}")]
    Mismatch(String),
}

/// The current acceptor, swapped on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
    /// Modification times the loaded acceptor was built from.
    loaded: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Build an acceptor from PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Cert {
            path: cert.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.to_path_buf(),
            why: String::from("no CERTIFICATE block"),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>, TlsError> {
        let stamps = (modified(cert), modified(key));
        Ok(Arc::new(Tls {
            acceptor: RwLock::new(acceptor(cert, key)?),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: RwLock::new(stamps),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }

    /// Load the files again; the old acceptor stays on failure.
    pub fn reload(&self, metrics: &Metrics) {
        let stamps = (modified(&self.cert), modified(&self.key));
        match acceptor(&self.cert, &self.key) {
            Ok(a) => {
                *self.acceptor.write() = a;
                *self.loaded.write() = stamps;
                metrics.tls_reloads.increment(TlsReload::Ok);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(err) => {
                // Not again until the files change again.
                *self.loaded.write() = stamps;
                metrics.tls_reloads.increment(TlsReload::Error);
                tracing::warn!(error = %err, "TLS certificate reload failed; keeping the previous one");
            }
        }
    }

    fn changed(&self) -> bool {
        *self.loaded.read() != (modified(&self.cert), modified(&self.key))
    }

    /// Reload on SIGHUP and when the files change, until `stop`.
    pub async fn watch(self: Arc<Tls>, metrics: Arc<Metrics>, stop: CancellationToken) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(err) => {
                tracing::warn!(error = %err, "cannot watch SIGHUP; TLS reloads on file changes only");
                None
            }
        };
        let mut poll = tokio::time::interval(RELOAD_POLL);
        loop {
            let hup_signal = async {
                match &mut hup {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup_signal => self.reload(&metrics),
                _ = poll.tick() => {
                    if self.changed() {
                        self.reload(&metrics);
                    }
                }
            }
        }
    }
}
