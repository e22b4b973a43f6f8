//! Connect-token keys from an identity provider's JWKS (`jwt_jwks_url`):
//! fetched, bounded, parsed into verification keys by `kid`, and swapped in
//! whole, so a rotation at the provider reaches every new connection without
//! a restart.
//!
//! Verification never waits for the network: a token whose `kid` is not in
//! the current set is refused (401), and asks the refresher (a background
//! task the server runs: `server::jwks_refresher`) to fetch again, at most
//! once per `jwt_jwks_min_interval`, so a client flooding made-up `kid`s
//! cannot turn this node into a load generator against the provider. A fetch
//! that fails or returns garbage keeps the previous set.
//!
//! Never accepts a symmetric (`HS*`) or `none` algorithm from a JWKS: a
//! public key must not double as an HMAC secret (algorithm confusion).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::RwLock;
use tokio::sync::Notify;

/// Largest JWKS document read (providers publish a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// Most keys taken from one document.
pub const MAX_JWKS_KEYS: usize = 100;
/// Longest `kid` accepted, in the set or in a token.
pub const MAX_KID_BYTES: usize = 256;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
    #[error("the JWKS answered HTTP {0}")]
    Status(u16),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON Web Key Set: {0}")]
    Malformed(String),
    #[error("the JWKS holds no usable signing key")]
    NoKeys,
}

/// One verification key and the algorithms its tokens may use.
pub struct TokenKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// Keys by `kid`, as the last good fetch returned them.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<TokenKey>>,
    /// The only key, when the set has exactly one: tokens without a `kid`
    /// may use it.
    single: Option<Arc<TokenKey>>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.single.is_some() && self.by_kid.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a token's key was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// No fetch has succeeded yet.
    NotLoaded,
    /// The token's `kid` is not in the set (a refresh was asked for).
    UnknownKid,
    /// No `kid`, and the set has more than one key.
    KidRequired,
}

/// The current key set, shared by the authenticator and the refresher.
#[derive(Default)]
pub struct JwksKeys {
    set: RwLock<Option<Arc<KeySet>>>,
    wanted: Notify,
}

impl JwksKeys {
    /// The key for a token's `kid`.
    pub fn key(&self, kid: Option<&str>) -> Result<Arc<TokenKey>, Lookup> {
        let set = self.set.read().clone().ok_or(Lookup::NotLoaded)?;
        match kid {
            Some(kid) => match set.by_kid.get(kid) {
                Some(key) => Ok(Arc::clone(key)),
                None => {
                    // Maybe rotated in at the provider since the last fetch.
                    self.wanted.notify_one();
                    Err(Lookup::UnknownKid)
                }
            },
            None => set.single.clone().ok_or(Lookup::KidRequired),
        }
    }

    pub fn replace(&self, set: KeySet) {
        *self.set.write() = Some(Arc::new(set));
    }

    pub fn is_loaded(&self) -> bool {
        self.set.read().is_some()
    }

    /// Resolves when a lookup missed since the last call (the refresher
    /// waits on it, then on its minimum interval).
    pub async fn refresh_wanted(&self) {
        self.wanted.notified().await;
    }
}

/// The algorithms a key's tokens may be signed with: its `alg` if it names
/// one, else every algorithm of its type. Never a symmetric one.
fn algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // A shared secret in a public key set: never.
        AlgorithmParameters::OctetKey(_) => Vec::new(),
    };
    let named = match jwk.common.key_algorithm {
        None => return family,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return Vec::new(),
    };
    if family.contains(&named) {
        vec![named]
    } else {
        Vec::new()
    }
}

/// Parse a JWKS document into signing keys; keys for encryption, of unknown
/// types, with over-long `kid`s or that do not parse are skipped.
pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed(e.to_string()))?;
    let Some(entries) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err(JwksError::Malformed(String::from("no \"keys\" array")));
    };
    let mut by_kid = HashMap::new();
    let mut unnamed = Vec::new();
    // Entries one at a time: one key of a type this build does not know
    // must not cost the others.
    for entry in entries.iter().take(MAX_JWKS_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let algorithms = algorithms(&jwk);
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let key = Arc::new(TokenKey { key, algorithms });
        match jwk.common.key_id {
            Some(kid) if kid.len() <= MAX_KID_BYTES => {
                by_kid.insert(kid, key);
            }
            Some(_) => {}
            None => unnamed.push(key),
        }
    }
    let single = match (by_kid.len(), unnamed.len()) {
        (1, 0) => by_kid.values().next().cloned(),
        (0, 1) => unnamed.pop(),
        _ => None,
    };
    if by_kid.is_empty() && single.is_none() {
        return Err(JwksError::NoKeys);
    }
    Ok(KeySet { by_kid, single })
}

/// Fetch and parse the set at `url`, reading at most [`MAX_JWKS_BYTES`].
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<KeySet, JwksError> {
    let fetch_err = |e: reqwest::Error| JwksError::Fetch(e.without_url().to_string());
    let mut resp = client
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(fetch_err)?;
    if !resp.status().is_success() {
        return Err(JwksError::Status(resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
    {
        return Err(JwksError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fetch_err)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body)
}

/// The HTTP client for fetches: rustls with the system's roots, no
/// redirects to elsewhere (a JWKS URL is configured, not discovered).
pub fn client() -> Result<reqwest::Client, JwksError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("myriad/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| JwksError::Fetch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC_KEY: &str = r#"{"kty":"EC","crv":"P-256","kid":"k1","alg":"ES256","use":"sig",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn signing_keys_are_taken_by_kid_and_the_rest_skipped() {
        let doc = format!(
            r#"{{"keys":[{EC_KEY},
            {{"kty":"oct","kid":"hmac","k":"c2VjcmV0"}},
            {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
            {{"kty":"EC","crv":"P-256","kid":"lies","alg":"HS256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}},
            {{"kty":"future","kid":"new"}}]}}"#
        );
        let set = parse(doc.as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        let keys = JwksKeys::default();
        assert_eq!(keys.key(Some("k1")).err(), Some(Lookup::NotLoaded));
        keys.replace(set);
        let k1 = keys.key(Some("k1")).ok().unwrap();
        assert_eq!(k1.algorithms, [Algorithm::ES256]);
        // The only key also serves tokens without a kid.
        assert!(keys.key(None).is_ok());
        for refused in ["hmac", "enc", "lies", "new", "nope"] {
            assert_eq!(keys.key(Some(refused)).err(), Some(Lookup::UnknownKid));
        }
    }

    #[test]
    fn hostile_documents_are_refused() {
        assert!(matches!(parse(b"[]"), Err(JwksError::Malformed(_))));
        assert!(matches!(parse(b"{\"keys\":[]}"), Err(JwksError::NoKeys)));
        assert!(matches!(
            parse(&vec![b' '; MAX_JWKS_BYTES + 1]),
            Err(JwksError::TooLarge)
        ));
        let long_kid = EC_KEY.replace("\"k1\"", &format!("\"{}\"", "k".repeat(300)));
        assert!(matches!(
            parse(format!("{{\"keys\":[{long_kid}]}}").as_bytes()),
            Err(JwksError::NoKeys)
        ));
        // Two keys: a token must name its kid.
        let two = format!(
            "{{\"keys\":[{EC_KEY},{}]}}",
            EC_KEY.replace("\"k1\"", "\"k2\"")
        );
        let keys = JwksKeys::default();
        keys.replace(parse(two.as_bytes()).unwrap());
        assert_eq!(keys.key(None).err(), Some(Lookup::KidRequired));
        assert!(keys.key(Some("k2")).is_ok());
    }
}
