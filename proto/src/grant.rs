//! Sandbox grants: the master's word to an agent that a caller may read
//! one task's files until a moment. When the master authenticates callers
//! it gives each agent a key of its own in `AgentRegistered` (derived from
//! the leader's random key and the agent's id, so an agent can sign grants
//! for itself only; fresh for every leader: agents register again after a
//! failover); it signs a grant for a
//! principal that may view the task's role, and the agent verifies it
//! before serving. A grant is `v1.<expires_at>.<hex HMAC-SHA256>` over the
//! framework id, the task id, the agent id and the expiry: it opens that
//! task's sandbox on that agent only, and nothing after it expires.
//!
//! Pure: time is passed in.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The metadata key a grant travels in on `AgentFiles` calls.
pub const GRANT_METADATA: &str = "x-mezz-grant";

/// How long a grant the master signs is valid.
pub const GRANT_SECS: u64 = 300;

/// The length of a grant key.
pub const KEY_BYTES: usize = 32;

/// Why a grant was refused; shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No grant came.
    #[error(
        "this agent serves a task's files only with a grant from the master; \
         ask the master (`mezz logs` does) for one"
    )]
    Missing,
    /// Not of the form `v1.<expires>.<mac>`.
    #[error("the sandbox grant is malformed; ask the master for a new one")]
    Malformed,
    /// Past its expiry.
    #[error("the sandbox grant expired at {0}; ask the master for a new one")]
    Expired(u64),
    /// Signed with another key, or for another task or agent.
    #[error(
        "the sandbox grant is not valid for task {task} of framework {framework} on this \
         agent (forged, for another task, or from an earlier leader); ask the master for a new one"
    )]
    BadSignature {
        /// The framework asked for.
        framework: String,
        /// The task asked for.
        task: String,
    },
}

fn mac(
    key: &[u8],
    framework_id: &str,
    task_id: &str,
    agent_id: &str,
    expires: u64,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    // Lengths first, so that no two (framework, task, agent) run together
    // into the same bytes.
    for part in [framework_id, task_id, agent_id] {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part.as_bytes());
    }
    m.update(&expires.to_be_bytes());
    m
}

/// A grant for task `task_id` of `framework_id` on agent `agent_id`, valid
/// until `expires` (Unix seconds).
pub fn sign(key: &[u8], framework_id: &str, task_id: &str, agent_id: &str, expires: u64) -> String {
    let tag = mac(key, framework_id, task_id, agent_id, expires)
        .finalize()
        .into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("v1.{expires}.{hex}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Checks `grant` for this task on agent `agent_id` at `now` (Unix seconds).
pub fn verify(
    key: &[u8],
    grant: Option<&str>,
    framework_id: &str,
    task_id: &str,
    agent_id: &str,
    now: f64,
) -> Result<(), GrantError> {
    let grant = grant
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .ok_or(GrantError::Missing)?;
    let mut parts = grant.splitn(3, '.');
    let (Some("v1"), Some(expires), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(GrantError::Malformed);
    };
    let expires: u64 = expires.parse().map_err(|_| GrantError::Malformed)?;
    let tag = unhex(tag).ok_or(GrantError::Malformed)?;
    // The signature first, so that an expired forgery reads as a forgery.
    mac(key, framework_id, task_id, agent_id, expires)
        .verify_slice(&tag)
        .map_err(|_| GrantError::BadSignature {
            framework: framework_id.to_string(),
            task: task_id.to_string(),
        })?;
    if now >= expires as f64 {
        return Err(GrantError::Expired(expires));
    }
    Ok(())
}

/// The key of agent `agent_id` under the master's key: each agent gets its
/// own, so that an agent can sign grants for nothing but itself.
pub fn agent_key(master_key: &[u8], agent_id: &str) -> Vec<u8> {
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(master_key).expect("HMAC takes any key length");
    m.update(b"mezzanine agent grant key\0");
    m.update(agent_id.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// A fresh random key.
pub fn new_key() -> Result<Vec<u8>, String> {
    let mut key = vec![0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a grant key: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_grant_opens_its_task_on_its_agent_until_it_expires() {
        let g = sign(KEY, "f1", "t1", "a1", 1000);
        assert_eq!(verify(KEY, Some(&g), "f1", "t1", "a1", 999.5), Ok(()));
        assert_eq!(
            verify(KEY, Some(&g), "f1", "t1", "a1", 1000.0),
            Err(GrantError::Expired(1000))
        );
        for (f, t, a) in [("f1", "t2", "a1"), ("f2", "t1", "a1"), ("f1", "t1", "a2")] {
            assert!(
                matches!(
                    verify(KEY, Some(&g), f, t, a, 1.0),
                    Err(GrantError::BadSignature { .. })
                ),
                "{f} {t} {a}"
            );
        }
        // Boundaries between the fields count.
        let g = sign(KEY, "f1", "t1x", "a1", 1000);
        assert!(verify(KEY, Some(&g), "f1t", "1x", "a1", 1.0).is_err());
    }

    #[test]
    fn forged_and_malformed_grants_are_refused() {
        let other = b"another key, another leader.....";
        let g = sign(other, "f1", "t1", "a1", 1000);
        assert!(matches!(
            verify(KEY, Some(&g), "f1", "t1", "a1", 1.0),
            Err(GrantError::BadSignature { .. })
        ));
        // A later expiry on a real signature.
        let real = sign(KEY, "f1", "t1", "a1", 1000);
        let moved = real.replacen("1000", "9999", 1);
        assert!(verify(KEY, Some(&moved), "f1", "t1", "a1", 1.0).is_err());
        assert_eq!(
            verify(KEY, None, "f1", "t1", "a1", 1.0),
            Err(GrantError::Missing)
        );
        assert_eq!(
            verify(KEY, Some(" "), "f1", "t1", "a1", 1.0),
            Err(GrantError::Missing)
        );
        for bad in [
            "v1",
            "v2.1000.00",
            "v1.x.00",
            "v1.1000.zz",
            "v1.1000.abc",
            "v1.1000.é",
        ] {
            assert_eq!(
                verify(KEY, Some(bad), "f1", "t1", "a1", 1.0),
                Err(GrantError::Malformed),
                "{bad}"
            );
        }
        assert!(new_key().unwrap() != new_key().unwrap());
        // One agent's key signs nothing another agent accepts.
        let (a1, a2) = (agent_key(KEY, "a1"), agent_key(KEY, "a2"));
        assert_ne!(a1, a2);
        let g = sign(&a1, "f1", "t1", "a2", 1000);
        assert!(verify(&a2, Some(&g), "f1", "t1", "a2", 1.0).is_err());
    }
}
