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
}
