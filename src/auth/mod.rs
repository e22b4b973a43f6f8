//! Who may connect and what they may join: JWT connect tokens (HS256, RS256,
//! ES256 with a configured key, or an identity provider's keys by `kid`:
//! `jwks`), anonymous access, the Origin allow-list, and API keys.
//!
//! Owns the decision and its reason; never touches sessions. A refused
//! connect is an `AuthError`, rendered by the upgrade as HTTP 403.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Pattern;
use crate::config::{Config, JwtAlgorithm};
use crate::revocation::Revocations;

pub mod jwks;

use jwks::{JwksKeys, Lookup, TokenKey};

/// The subprotocol phoenix.js 1.8 offers beside the token, echoed on success.
pub const PHOENIX_SUBPROTOCOL: &str = "phoenix";
/// Prefix of the token-carrying subprotocol entry (standard base64, no padding,
/// despite the name: docs/protocol.md §1.5).
pub const BEARER_PREFIX: &str = "base64url.bearer.phx.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a connect token is required (anonymous connections are disabled)")]
    TokenRequired,
    #[error("invalid connect token: {0}")]
    InvalidToken(String),
    #[error("connect token has expired")]
    Expired,
    #[error("origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    #[error(
        "tokens are not accepted: no jwt_secret, jwt_public_key_file or jwt_jwks_url is configured"
    )]
    NoKey,
    #[error("connect token revoked: the user was disconnected; get a new token")]
    Revoked,
    #[error("host {0:?} is not served here (allowed_hosts)")]
    HostNotAllowed(String),
}

impl AuthError {
    /// Whether the refusal is about the Origin (else about the token).
    pub fn is_origin(&self) -> bool {
        matches!(
            self,
            AuthError::OriginNotAllowed(_) | AuthError::HostNotAllowed(_)
        )
    }

    /// Whether the token was good but its user is revoked.
    pub fn is_revoked(&self) -> bool {
        matches!(self, AuthError::Revoked)
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Issued at: compared with revocations (`revocation`).
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    topics: Option<Vec<String>>,
}

/// An authenticated (or anonymous) connection.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The token's `sub`; None for anonymous connections.
    pub user: Option<String>,
    /// Topic patterns the token allows; None allows every routed topic.
    pub topics: Option<Vec<Pattern>>,
    /// When the token expires: the session is closed then.
    pub expires_in: Option<Duration>,
    /// The client offered the `phoenix` subprotocol; the 101 must echo it.
    pub echo_subprotocol: bool,
    /// Every claim of the verified token, kept only when a connect hook
    /// will be shown them.
    pub claims: Option<serde_json::Value>,
    /// The connect hook's `info`, sent back with the connection's hook calls.
    pub info: Option<serde_json::Value>,
}

impl Identity {
    pub fn may_join(&self, topic: &str) -> bool {
        self.topics
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(topic)))
    }
}

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at least as
/// long as the hash (256 bits); a short one can be brute-forced offline from
/// any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest token lifetime honoured for the session's expiry timer; a later
/// `exp` (10^19, say) counts as this far away instead of overflowing it.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What a connection without a token may do.
#[derive(Debug, Clone)]
enum Anonymous {
    Refused,
    /// No key is configured: a single-tenant setup, every routed topic.
    Everything,
    /// A key is configured too: only these topics.
    Topics(Vec<Pattern>),
}

/// Where token keys come from.
enum TokenKeys {
    None,
    /// `jwt_secret` or `jwt_public_key_file`.
    Static(Arc<TokenKey>),
    /// `jwt_jwks_url`, by `kid`.
    Jwks(Arc<JwksKeys>),
}

pub struct Authenticator {
    /// Users whose older tokens are refused (shared with the node, which
    /// learns other nodes' revocations).
    revocations: Arc<Revocations>,
    anonymous: Anonymous,
    keys: TokenKeys,
    issuer: Option<String>,
    audience: Option<String>,
    allowed_origins: Vec<String>,
    /// Host headers served (empty: any). With the same-host Origin rule this
    /// is what stops a DNS-rebinding page, whose Host is its own name.
    allowed_hosts: Vec<String>,
    api_keys: Vec<String>,
    /// Keep every claim of verified tokens (for the connect hook).
    keep_claims: bool,
}

impl Authenticator {
    /// Reads key files; fails on unreadable or malformed keys. `revocations`:
    /// the node's (a fresh one where none is shared).
    pub fn new(config: &Config, revocations: Arc<Revocations>) -> Result<Authenticator, String> {
        let static_key = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(String::from(
                    "set jwt_secret or jwt_public_key_file, not both",
                ))
            }
            (Some(secret), None) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(format!(
                        "jwt_secret must be at least {MIN_SECRET_BYTES} bytes (it is {}): a \
                         shorter HS256 secret can be guessed offline from any token",
                        secret.len()
                    ));
                }
                if config.jwt_algorithm != JwtAlgorithm::HS256 {
                    return Err(String::from(
                        "jwt_secret goes with jwt_algorithm = \"HS256\"",
                    ));
                }
                Some((
                    DecodingKey::from_secret(secret.as_bytes()),
                    Algorithm::HS256,
                ))
            }
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("jwt_public_key_file {}: {e}", path.display()))?;
                let key =
                    match config.jwt_algorithm {
                        JwtAlgorithm::RS256 => (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                        JwtAlgorithm::ES256 => (DecodingKey::from_ec_pem(&pem), Algorithm::ES256),
                        JwtAlgorithm::HS256 => return Err(String::from(
                            "jwt_public_key_file goes with jwt_algorithm = \"RS256\" or \"ES256\"",
                        )),
                    };
                let decoding = key
                    .0
                    .map_err(|e| format!("jwt_public_key_file {}: {e}", path.display()))?;
                Some((decoding, key.1))
            }
            (None, None) => None,
        };
        let keys = match (static_key, &config.jwt_jwks_url) {
            (Some(_), Some(_)) => {
                return Err(String::from(
                    "set jwt_jwks_url or jwt_secret/jwt_public_key_file, not both",
                ))
            }
            (Some((key, alg)), None) => TokenKeys::Static(Arc::new(TokenKey {
                key,
                algorithms: vec![alg],
            })),
            (None, Some(_)) => TokenKeys::Jwks(Arc::default()),
            (None, None) => TokenKeys::None,
        };
        Ok(Authenticator {
            revocations,
            anonymous: match (config.allows_anonymous(), config.has_token_key()) {
                (false, _) => Anonymous::Refused,
                (true, false) => Anonymous::Everything,
                (true, true) => Anonymous::Topics(
                    config
                        .anonymous_topics
                        .iter()
                        .map(|p| Pattern::parse(p))
                        .collect(),
                ),
            },
            keys,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            allowed_origins: config.allowed_origins.clone(),
            allowed_hosts: config.allowed_hosts.clone(),
            api_keys: config.api_keys.clone(),
            keep_claims: config.hooks.connect.is_some(),
        })
    }

    /// Check Origin, then find and verify the token (query `token`, or the
    /// `base64url.bearer.phx.` subprotocol entry).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Identity, AuthError> {
        self.check_origin(headers)?;
        let echo_subprotocol = offered_subprotocols(headers).any(|p| p == PHOENIX_SUBPROTOCOL);
        let sub_token = offered_subprotocols(headers)
            .find_map(|p| p.strip_prefix(BEARER_PREFIX))
            .map(|b| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(b.trim_end_matches('='))
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| {
                        AuthError::InvalidToken(String::from("bad base64 in subprotocol"))
                    })
            })
            .transpose()?;
        let token = query_token.map(str::to_owned).or(sub_token);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            let topics = match &self.anonymous {
                Anonymous::Refused => return Err(AuthError::TokenRequired),
                Anonymous::Everything => None,
                Anonymous::Topics(patterns) => Some(patterns.clone()),
            };
            return Ok(Identity {
                echo_subprotocol,
                topics,
                ..Identity::default()
            });
        };
        let mut identity = self.verify(&token)?;
        identity.echo_subprotocol = echo_subprotocol;
        Ok(identity)
    }

    /// The key a token names, and the algorithms it may be signed with.
    fn key_for(&self, token: &str) -> Result<(Arc<TokenKey>, Algorithm), AuthError> {
        let invalid = |why: &str| AuthError::InvalidToken(why.to_owned());
        let static_or_jwks = match &self.keys {
            TokenKeys::None => return Err(AuthError::NoKey),
            TokenKeys::Static(key) => Ok(key),
            TokenKeys::Jwks(keys) => Err(keys),
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let key = match static_or_jwks {
            Ok(key) => Arc::clone(key),
            Err(keys) => {
                // An over-long kid is refused before it can ask for a fetch.
                if header
                    .kid
                    .as_ref()
                    .is_some_and(|k| k.len() > jwks::MAX_KID_BYTES)
                {
                    return Err(invalid("kid too long"));
                }
                keys.key(header.kid.as_deref())
                    .map_err(|lookup| match lookup {
                        Lookup::NotLoaded => {
                            invalid("the identity provider's keys are not loaded yet")
                        }
                        Lookup::UnknownKid => invalid("unknown kid"),
                        Lookup::KidRequired => invalid("token has no kid"),
                    })?
            }
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(invalid("algorithm not allowed for this key"));
        }
        Ok((key, header.alg))
    }

    /// The identity provider's key set, when tokens are checked against one
    /// (the server runs its refresher).
    pub fn jwks(&self) -> Option<&Arc<JwksKeys>> {
        match &self.keys {
            TokenKeys::Jwks(keys) => Some(keys),
            _ => None,
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let (key, alg) = self.key_for(token)?;
        let key = &key.key;
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Most JWT libraries accept an `aud` nobody asked to check.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let refused = |e: jsonwebtoken::errors::Error| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::InvalidToken(e.to_string()),
        };
        let (data, all_claims) = if self.keep_claims {
            let all = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
                .map_err(refused)?;
            let claims: Claims = serde_json::from_value(all.claims.clone())
                .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
            (
                jsonwebtoken::TokenData {
                    header: all.header,
                    claims,
                },
                Some(all.claims),
            )
        } else {
            (
                jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(refused)?,
                None,
            )
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if data.claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if self
            .revocations
            .is_revoked(&data.claims.sub, data.claims.iat, now)
        {
            return Err(AuthError::Revoked);
        }
        Ok(Identity {
            user: Some(data.claims.sub),
            topics: data
                .claims
                .topics
                .map(|t| t.iter().map(|p| Pattern::parse(p)).collect()),
            expires_in: Some(Duration::from_secs(data.claims.exp - now).min(MAX_TOKEN_LIFETIME)),
            echo_subprotocol: false,
            claims: all_claims,
            info: None,
        })
    }

    /// Against cross-site WebSocket hijacking: a browser always sends Origin.
    /// Default (empty list): the Origin's host must be the request's Host.
    fn check_origin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if !self.allowed_hosts.is_empty() {
            let host = headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
            let listed = self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(bare));
            if !listed {
                return Err(AuthError::HostNotAllowed(
                    crate::protocol::limits::truncated(host, 128).to_owned(),
                ));
            }
        }
        let Some(raw) = headers.get(http::header::ORIGIN) else {
            return Ok(()); // not a browser
        };
        // An Origin that is not plain ASCII is no origin we could allow; it
        // must not pass as "no Origin" either.
        let Ok(origin) = raw.to_str() else {
            return Err(AuthError::OriginNotAllowed(String::from("<not ASCII>")));
        };
        if self
            .allowed_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
        {
            return Ok(());
        }
        if self.allowed_origins.is_empty() {
            let host = headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok());
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            if host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host)) {
                return Ok(());
            }
        }
        Err(AuthError::OriginNotAllowed(origin.to_owned()))
    }

    /// `Authorization: Bearer <key>` for the HTTP API.
    pub fn api_key_ok(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.api_keys
            .iter()
            .any(|k| constant_time_eq(k.as_bytes(), given.trim().as_bytes()))
    }

    pub fn api_enabled(&self) -> bool {
        !self.api_keys.is_empty()
    }
}

/// The entries of every `Sec-WebSocket-Protocol` header, trimmed, borrowed
/// from the request (read twice rather than copied: it is on every upgrade).
fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // Lengths differ: not equal (a key's length is not the secret).
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests;
