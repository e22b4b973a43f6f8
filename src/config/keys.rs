//! The configuration's key names: which `MYRIAD_*` environment variables
//! are settings, and the closest real key to a misspelled one.
//!
//! Scripts and orchestrators set variables such as `MYRIAD_BIN` for their
//! own use: an unknown variable is a warning (it is ignored), while an
//! unknown key in a file stays an error. Never reads files.

use super::Config;

/// The environment variables' prefix.
pub const ENV_PREFIX: &str = "MYRIAD_";

/// Every top-level key (as in the TOML file; lowercase).
pub fn known() -> Vec<String> {
    match serde_json::to_value(Config::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The real key closest to `name`, when one is close enough to be a typo.
pub fn closest<'a>(name: &str, keys: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.len() / 3).max(2);
    keys.into_iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Whether the (prefix-stripped, lowercased) variable name is a key.
pub fn is_known_env(key: &str, known: &[String]) -> bool {
    known.iter().any(|k| k == key)
}

/// A warning for every `MYRIAD_*` variable in `vars` that is no setting.
pub fn unknown_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let known = known();
    let mut out: Vec<String> = vars
        .into_iter()
        .filter_map(|(name, _)| {
            let key = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
            if is_known_env(&key, &known) {
                return None;
            }
            let hint = closest(&key, known.iter().map(String::as_str))
                .map(|k| format!("; did you mean {ENV_PREFIX}{}?", k.to_ascii_uppercase()))
                .unwrap_or_default();
            Some(format!(
                "environment variable {name} is not a setting and is ignored{hint}"
            ))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_the_closest_key_and_strangers_none() {
        let keys = known();
        assert!(keys.iter().any(|k| k == "max_connections"));
        let k = |s| closest(s, keys.iter().map(String::as_str));
        assert_eq!(k("max_conections"), Some("max_connections"));
        assert_eq!(k("idle_timout"), Some("idle_timeout"));
        assert_eq!(k("bin"), None);
        let warnings = unknown_env([
            ("MYRIAD_BIN".to_owned(), "/x".to_owned()),
            ("MYRIAD_MAX_CONECTIONS".to_owned(), "5".to_owned()),
            ("MYRIAD_MAX_CONNECTIONS".to_owned(), "5".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("MYRIAD_BIN is not a setting"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("did you mean MYRIAD_MAX_CONNECTIONS?"),
            "{warnings:?}"
        );
    }
}
