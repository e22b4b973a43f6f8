//! What a link presents to its broker beyond the URL: the TLS roots that
//! must have signed the broker's certificate (`broker_tls_ca`; the system's
//! roots without it), a client certificate for brokers that require one
//! (`broker_tls_cert` + `broker_tls_key`), and NATS's key-based logins (a
//! `.creds` file, or an nkey seed).
//!
//! Everything is read once, at start (and by `myriad config check`), so a
//! missing or unreadable file stops the node with its key and path named
//! instead of surfacing later as an endless reconnect loop. It must never log
//! or print a key, a seed or a credential.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Largest file accepted for any of these (a CA bundle is tens of KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{key}: cannot read {path:?}: {why}")]
    Read {
        key: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{key}: {path:?} holds no PEM block (expected {expected})")]
    NotPem {
        key: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
}

/// A PEM file read at start: its path (NATS takes paths) and its bytes.
#[derive(Clone)]
pub struct PemFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A client key is a secret: only the path is shown.
        f.debug_struct("PemFile").field("path", &self.path).finish()
    }
}

/// How a NATS link logs in besides what its URL says.
#[derive(Clone, Default)]
pub enum NatsLogin {
    #[default]
    Url,
    /// The contents of a `.creds` file (user JWT and nkey seed).
    Creds(String),
    /// A user nkey seed (`SU...`).
    Nkey(String),
}

impl std::fmt::Debug for NatsLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NatsLogin::Url => "Url",
            NatsLogin::Creds(_) => "Creds(..)",
            NatsLogin::Nkey(_) => "Nkey(..)",
        })
    }
}

/// Everything beyond the URL a link needs to reach its broker.
#[derive(Debug, Clone, Default)]
pub struct LinkSecurity {
    pub ca: Option<PemFile>,
    /// (certificate, key) for mutual TLS.
    pub client: Option<(PemFile, PemFile)>,
    pub nats: NatsLogin,
}

impl LinkSecurity {
    /// Read the files `config` names (its validation already checked which
    /// combinations make sense).
    pub fn load(config: &Config) -> Result<LinkSecurity, SecurityError> {
        let ca = config
            .broker_tls_ca
            .as_deref()
            .map(|p| read_pem("broker_tls_ca", p, "CERTIFICATE"))
            .transpose()?;
        let client = match (&config.broker_tls_cert, &config.broker_tls_key) {
            (Some(cert), Some(key)) => Some((
                read_pem("broker_tls_cert", cert, "CERTIFICATE")?,
                read_pem("broker_tls_key", key, "PRIVATE KEY")?,
            )),
            _ => None,
        };
        let nats = match (&config.broker_nats_creds, &config.broker_nats_nkey) {
            (Some(path), _) => {
                let text = read_text("broker_nats_creds", path)?;
                if !text.contains("-----BEGIN NATS USER JWT-----") {
                    return Err(SecurityError::NotPem {
                        key: "broker_nats_creds",
                        path: path.clone(),
                        expected: "NATS USER JWT",
                    });
                }
                NatsLogin::Creds(text)
            }
            (None, Some(seed)) => NatsLogin::Nkey(seed.clone()),
            (None, None) => NatsLogin::Url,
        };
        Ok(LinkSecurity { ca, client, nats })
    }
}

fn read_text(key: &'static str, path: &Path) -> Result<String, SecurityError> {
    let err = |why: String| SecurityError::Read {
        key,
        path: path.to_path_buf(),
        why,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(err(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    std::fs::read_to_string(path).map_err(|e| err(e.to_string()))
}

/// A PEM file whose blocks include one labelled `... {label}-----` (key
/// files say "PRIVATE KEY", "RSA PRIVATE KEY" or "EC PRIVATE KEY").
fn read_pem(key: &'static str, path: &Path, label: &'static str) -> Result<PemFile, SecurityError> {
    let text = read_text(key, path)?;
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----")));
    if !found {
        return Err(SecurityError::NotPem {
            key,
            path: path.to_path_buf(),
            expected: label,
        });
    }
    Ok(PemFile {
        path: path.to_path_buf(),
        pem: text.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn files_are_read_once_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("myriad-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = write(
            &dir,
            "ca.pem",
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        );
        let key = write(
            &dir,
            "key.pem",
            "-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n",
        );
        let junk = write(&dir, "junk.pem", "not a pem");
        let config = Config {
            broker_tls_ca: Some(ca.clone()),
            broker_tls_cert: Some(ca.clone()),
            broker_tls_key: Some(key),
            ..Config::default()
        };
        let sec = LinkSecurity::load(&config).unwrap();
        assert!(sec.ca.is_some() && sec.client.is_some());
        // Nothing secret in its debug form.
        assert!(!format!("{sec:?}").contains("BEGIN"));

        let bad = Config {
            broker_tls_ca: Some(junk.clone()),
            ..Config::default()
        };
        let err = LinkSecurity::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("broker_tls_ca") && err.contains("junk.pem"),
            "{err}"
        );
        let missing = Config {
            broker_tls_key: Some(dir.join("nope.pem")),
            broker_tls_cert: Some(ca),
            ..Config::default()
        };
        let err = LinkSecurity::load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("broker_tls_key") && err.contains("nope.pem"),
            "{err}"
        );
        let creds = Config {
            broker_nats_creds: Some(junk),
            ..Config::default()
        };
        let err = LinkSecurity::load(&creds).unwrap_err().to_string();
        assert!(err.contains("broker_nats_creds"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
