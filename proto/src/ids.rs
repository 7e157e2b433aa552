//! Newtype identifiers, so an agent id can never be passed where a task id
//! belongs. On the wire they are plain strings.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_string())
            }
        }
    };
}

id_type!(
    /// Identity of an agent, chosen by the agent and kept in its checkpoint.
    AgentId
);
id_type!(
    /// Identity of a framework, assigned by the master at first subscription.
    FrameworkId
);
id_type!(
    /// Identity of a task, chosen by its framework; unique within it.
    TaskId
);
id_type!(
    /// Identity of an offer, assigned by the master.
    OfferId
);

/// The longest web URL a framework or task may publish.
pub const MAX_WEB_URL_BYTES: usize = 2048;

/// Checks a URL a framework publishes for people to open (its web UI, a
/// task's `url` label): empty, or `http://`/`https://` with no spaces or
/// control characters, at most [`MAX_WEB_URL_BYTES`]. Anything else (a
/// `javascript:` URL, say) could run in the status page's origin.
pub fn validate_web_url(what: &str, url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    if url.len() > MAX_WEB_URL_BYTES {
        return Err(format!("{what} is longer than {MAX_WEB_URL_BYTES} bytes"));
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(format!(
            "{what} '{url}' must start with http:// or https://"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{what} contains spaces or control characters"));
    }
    Ok(())
}

/// Checks that an id chosen by a client is usable as a name: non-empty, at
/// most 128 bytes, and made of ASCII letters, digits, `-`, `_` and `.` (it
/// becomes part of sandbox paths, so `/` and `..` are refused).
pub fn validate_id(kind: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{kind} id is empty"));
    }
    if id.len() > 128 {
        return Err(format!(
            "{kind} id '{}…' is longer than 128 bytes",
            &id[..32]
        ));
    }
    if id == "." || id == ".." {
        return Err(format!("{kind} id '{id}' is not allowed"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{kind} id '{id}' contains '{c}'; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(validate_id("task", "run-1.a_b").is_ok());
        assert!(validate_id("task", "").unwrap_err().contains("empty"));
        assert!(validate_id("task", "..").is_err());
        assert!(validate_id("task", "a/b").unwrap_err().contains("'/'"));
        assert!(validate_id("task", &"x".repeat(200)).is_err());
    }

    #[test]
    fn web_urls_are_http_only() {
        assert!(validate_web_url("webui_url", "").is_ok());
        assert!(validate_web_url("webui_url", "http://127.0.0.1:8080/").is_ok());
        assert!(validate_web_url("webui_url", "HTTPS://host/x?a=b").is_ok());
        assert!(validate_web_url("webui_url", "javascript:alert(1)")
            .unwrap_err()
            .contains("http://"));
        assert!(validate_web_url("webui_url", "http://a b").is_err());
        assert!(validate_web_url("webui_url", &format!("http://{}", "x".repeat(3000))).is_err());
    }
}
