//! Bearer tokens as the masters keep them (a salted hash per token id, in
//! the replicated registry) and the one check of a presented token against
//! them. Pure: the time is a parameter, the salt is made by the caller.
//!
//! A token reads `mezz_<id>_<secret>` (see `mezz_proto::auth`): the id
//! finds the record, so checking a token costs one hash, and the hashes are
//! compared in constant time.

use std::collections::BTreeMap;

use mezz_proto::auth::Token;
use mezz_proto::v1::{TokenRecord, TokenView};
use sha2::{Digest, Sha256};

/// Separates this use of SHA-256 from any other, and its versions.
const LABEL: &[u8] = b"mezzanine bearer token v1";

/// The longest principal name.
pub const MAX_PRINCIPAL_LEN: usize = 128;

/// Who made a call, as its token says. Put into each request's extensions
/// by the API layer once the token is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(pub String);

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a call's token was refused. Messages name the token by its id only,
/// never its secret, and say what to do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No token came with the call.
    #[error(
        "no token: this master requires one; set $MEZZ_TOKEN or pass --credentials FILE \
         (a token comes from `mezz token create PRINCIPAL`)"
    )]
    Missing,
    /// What came is not a token.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No token has this id.
    #[error("unknown token {0}: no such token on this cluster; ask an operator for a new one")]
    Unknown(String),
    /// The id is known but the secret is not its secret.
    #[error("wrong token {0}: the secret does not match; check that the token was copied whole")]
    Wrong(String),
    /// The token was valid until `at`.
    #[error(
        "expired token {id}: it expired at {at:.0} (Unix seconds); ask an operator for a new one"
    )]
    Expired {
        /// Token id.
        id: String,
        /// When it expired.
        at: f64,
    },
    /// The token was revoked.
    #[error("revoked token {0}: it was revoked by an operator; ask for a new one")]
    Revoked(String),
}

/// Checks a principal's name: printable, no blanks, bounded.
pub fn check_principal(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the principal is empty; name who the token is for".into());
    }
    if name.len() > MAX_PRINCIPAL_LEN {
        return Err(format!(
            "principal '{}…' is longer than {MAX_PRINCIPAL_LEN} bytes",
            name.chars().take(32).collect::<String>()
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "principal {name:?} has blanks or control characters; use a plain name"
        ));
    }
    Ok(())
}

fn digest(id: &str, salt: &[u8], secret: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(LABEL);
    // Lengths first, so that no two (salt, id) pairs feed the same bytes.
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update((id.len() as u64).to_be_bytes());
    h.update(id.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().to_vec()
}

/// The record to replicate for `token`, given to `principal`.
pub fn record(
    token: &Token,
    principal: &str,
    salt: &[u8],
    created_at: f64,
    expires_at: f64,
) -> TokenRecord {
    TokenRecord {
        id: token.id().to_string(),
        principal: principal.to_string(),
        salt: salt.to_vec(),
        hash: digest(token.id(), salt, token.secret()),
        created_at,
        expires_at,
        revoked_at: 0.0,
        bootstrap: false,
    }
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token in an `authorization` header value: `Bearer <token>`, or
/// `Basic` credentials whose password is the token (what a browser sends
/// after its login prompt; the user name is ignored).
pub fn from_header(value: Option<&str>) -> Result<Token, AuthError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    let Some(value) = value else {
        return Err(AuthError::Missing);
    };
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(AuthError::Malformed(
            "the authorization header must read `Bearer <token>`".into(),
        ));
    };
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| AuthError::Malformed("Basic credentials are not base64 text".into()))?;
        let password = decoded.split_once(':').map(|(_, p)| p).unwrap_or("");
        return Token::parse(password).map_err(|e| AuthError::Malformed(e.to_string()));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed(format!(
            "authorization scheme '{}' is not Bearer",
            scheme.chars().take(16).collect::<String>()
        )));
    }
    Token::parse(rest).map_err(|e| AuthError::Malformed(e.to_string()))
}

/// Who presents `token`, checked against the replicated `tokens` at `now`
/// (Unix seconds).
pub fn authenticate(
    tokens: &BTreeMap<String, TokenRecord>,
    token: &Token,
    now: f64,
) -> Result<Principal, AuthError> {
    let Some(rec) = tokens.get(token.id()) else {
        return Err(AuthError::Unknown(token.id().to_string()));
    };
    // The secret first: someone who only knows an id learns nothing of
    // the token's state.
    if !equal_in_constant_time(&rec.hash, &digest(&rec.id, &rec.salt, token.secret())) {
        return Err(AuthError::Wrong(rec.id.clone()));
    }
    if rec.revoked_at > 0.0 {
        return Err(AuthError::Revoked(rec.id.clone()));
    }
    if rec.expires_at > 0.0 && now >= rec.expires_at {
        return Err(AuthError::Expired {
            id: rec.id.clone(),
            at: rec.expires_at,
        });
    }
    Ok(Principal(rec.principal.clone()))
}

/// The ids `id_or_principal` names among tokens not yet revoked: one token
/// by id, or every token of a principal.
pub fn to_revoke(tokens: &BTreeMap<String, TokenRecord>, id_or_principal: &str) -> Vec<String> {
    if let Some(r) = tokens.get(id_or_principal) {
        return if r.revoked_at > 0.0 {
            vec![]
        } else {
            vec![r.id.clone()]
        };
    }
    tokens
        .values()
        .filter(|r| r.principal == id_or_principal && r.revoked_at == 0.0)
        .map(|r| r.id.clone())
        .collect()
}

/// A token as listed: no secret, no hash.
pub fn view(r: &TokenRecord) -> TokenView {
    TokenView {
        id: r.id.clone(),
        principal: r.principal.clone(),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(recs: &[TokenRecord]) -> BTreeMap<String, TokenRecord> {
        recs.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    #[test]
    fn a_token_authenticates_its_principal_until_it_expires_or_is_revoked() {
        let alice = Token::generate().unwrap();
        let bob = Token::generate().unwrap();
        let mut a = record(&alice, "alice", b"s1", 100.0, 200.0);
        let b = record(&bob, "bob", b"s2", 100.0, 0.0);
        let t = table(&[a.clone(), b.clone()]);
        assert_eq!(
            authenticate(&t, &alice, 150.0),
            Ok(Principal("alice".into()))
        );
        assert_eq!(
            authenticate(&t, &bob, 1e12),
            Ok(Principal("bob".into())),
            "no expiry"
        );
        assert_eq!(
            authenticate(&t, &alice, 200.0),
            Err(AuthError::Expired {
                id: alice.id().into(),
                at: 200.0
            })
        );
        // Bob's secret under Alice's id.
        let forged = Token::parse(&format!("mezz_{}_{}", alice.id(), bob.secret())).unwrap();
        assert_eq!(
            authenticate(&t, &forged, 150.0),
            Err(AuthError::Wrong(alice.id().into()))
        );
        let stranger = Token::generate().unwrap();
        assert_eq!(
            authenticate(&t, &stranger, 150.0),
            Err(AuthError::Unknown(stranger.id().into()))
        );
        a.revoked_at = 160.0;
        let t = table(&[a, b]);
        assert_eq!(
            authenticate(&t, &alice, 150.0),
            Err(AuthError::Revoked(alice.id().into()))
        );
        // A wrong secret for a revoked token says wrong, not revoked.
        assert_eq!(
            authenticate(&t, &forged, 150.0),
            Err(AuthError::Wrong(alice.id().into()))
        );
    }

    #[test]
    fn records_and_messages_never_hold_the_secret() {
        let tok = Token::generate().unwrap();
        let r = record(&tok, "alice", b"salt", 1.0, 0.0);
        assert!(!format!("{r:?}").contains(tok.secret()));
        assert_ne!(
            r.hash,
            record(&tok, "alice", b"other", 1.0, 0.0).hash,
            "salted"
        );
        for e in [
            AuthError::Missing,
            AuthError::Unknown(tok.id().into()),
            AuthError::Wrong(tok.id().into()),
            AuthError::Revoked(tok.id().into()),
            AuthError::Expired {
                id: tok.id().into(),
                at: 3.0,
            },
            from_header(Some(&format!("Basic {}", tok.expose()))).unwrap_err(),
            from_header(Some(&format!("Digest {}", tok.expose()))).unwrap_err(),
            from_header(Some(&format!("Bearer {}x", tok.expose()))).unwrap_err(),
        ] {
            assert!(!e.to_string().contains(tok.secret()), "{e}");
        }
    }

    #[test]
    fn headers() {
        let tok = Token::generate().unwrap();
        assert_eq!(from_header(None), Err(AuthError::Missing));
        assert_eq!(from_header(Some("  ")), Err(AuthError::Missing));
        assert_eq!(
            from_header(Some(&format!("bearer {}", tok.expose()))),
            Ok(tok.clone())
        );
        assert!(matches!(
            from_header(Some("Bearer nope")),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            from_header(Some("x")),
            Err(AuthError::Malformed(_))
        ));
        use base64::Engine as _;
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("anyone:{}", tok.expose()));
        assert_eq!(
            from_header(Some(&format!("Basic {basic}"))),
            Ok(tok.clone())
        );
    }

    #[test]
    fn revoking_by_id_or_principal() {
        let (t1, t2, t3) = (
            Token::generate().unwrap(),
            Token::generate().unwrap(),
            Token::generate().unwrap(),
        );
        let mut gone = record(&t3, "alice", b"", 0.0, 0.0);
        gone.revoked_at = 5.0;
        let t = table(&[
            record(&t1, "alice", b"", 0.0, 0.0),
            record(&t2, "bob", b"", 0.0, 0.0),
            gone,
        ]);
        assert_eq!(to_revoke(&t, "alice"), vec![t1.id().to_string()]);
        assert_eq!(to_revoke(&t, t2.id()), vec![t2.id().to_string()]);
        assert!(to_revoke(&t, t3.id()).is_empty(), "already revoked");
        assert!(to_revoke(&t, "carol").is_empty());
    }

    #[test]
    fn principal_names() {
        assert!(check_principal("alice").is_ok());
        assert!(check_principal("team/ml@corp").is_ok());
        assert!(check_principal("").is_err());
        assert!(check_principal("a b").is_err());
        assert!(check_principal(&"x".repeat(200)).is_err());
    }
}
