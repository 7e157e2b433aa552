//! Agent identity: the secret an agent presents with every registration,
//! and the salted hash of it that the masters pin, through raft, at the
//! first registration of the agent's id (trust on first use).
//!
//! Why the agent makes its secret and the master only pins it, instead of
//! the master minting one and handing it out once: an agent that crashed
//! between receiving a minted secret and writing it down would be locked
//! out of its own id for good, with its tasks. An agent that writes its
//! secret (fsynced, mode 0600) before it ever registers cannot lose it that
//! way; the master learns nothing it must keep secret, only a hash.
//!
//! Pure: the salt is a master-made unique id, not randomness (the secret
//! carries 256 random bits; the salt only keeps equal secrets from having
//! equal hashes).

use mezz_proto::v1::AgentCredential;
use sha2::{Digest, Sha256};

/// Length of a secret on the wire: 32 bytes, hex-encoded.
pub const SECRET_HEX_LEN: usize = 64;

/// Separates this use of SHA-256 from any other, and its versions.
const LABEL: &[u8] = b"mezzanine agent secret v1";

/// Checks that a registration carries a secret of the expected shape.
pub fn check_secret(agent_id: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err(format!(
            "agent {agent_id} presented no secret; every agent registers with the secret \
             kept in its work dir: upgrade the agent to this master's release"
        ));
    }
    if secret.len() != SECRET_HEX_LEN || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "agent {agent_id} presented a malformed secret (want {SECRET_HEX_LEN} hex digits)"
        ));
    }
    Ok(())
}

fn digest(agent_id: &str, salt: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(LABEL);
    // Lengths first, so that no two (salt, id) pairs feed the same bytes.
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update((agent_id.len() as u64).to_be_bytes());
    h.update(agent_id.as_bytes());
    h.update(secret.to_ascii_lowercase().as_bytes());
    h.finalize().to_vec()
}

/// The credential to pin for `agent_id` presenting `secret`.
pub fn credential(agent_id: &str, salt: &[u8], secret: &str) -> AgentCredential {
    AgentCredential {
        agent_id: agent_id.to_string(),
        salt: salt.to_vec(),
        hash: digest(agent_id, salt, secret),
    }
}

/// Whether `secret` is the one pinned in `cred`. The comparison takes the
/// same time wherever the hashes differ.
pub fn verify(cred: &AgentCredential, agent_id: &str, secret: &str) -> bool {
    let want = &cred.hash;
    let got = digest(agent_id, &cred.salt, secret);
    want.len() == got.len() && want.iter().zip(&got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const S2: &str = "f0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn only_the_pinned_secret_verifies() {
        let c = credential("a1", b"salt", S1);
        assert!(verify(&c, "a1", S1));
        assert!(verify(&c, "a1", &S1.to_ascii_uppercase()));
        assert!(!verify(&c, "a1", S2));
        assert!(!verify(&c, "a2", S1), "bound to the agent id");
        assert!(!verify(&c, "a1", ""));
        assert_ne!(c.hash, credential("a1", b"other", S1).hash, "salted");
        assert!(!format!("{c:?}").contains(S1), "the secret is not kept");
    }

    #[test]
    fn secrets_have_one_shape() {
        assert!(check_secret("a1", S1).is_ok());
        assert!(check_secret("a1", "").unwrap_err().contains("no secret"));
        assert!(check_secret("a1", "abc").is_err());
        assert!(check_secret("a1", &"g".repeat(SECRET_HEX_LEN)).is_err());
    }
}
