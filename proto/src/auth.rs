//! Bearer tokens as clients hold and present them: their one format
//! (`mezz_<id>_<secret>`), where a client finds its own (`$MEZZ_TOKEN` or a
//! credentials file of mode 0600), and the interceptor that puts it on
//! every gRPC call as `authorization: Bearer …`. The masters keep only a
//! salted hash of the secret (see the master's `security` module).
//!
//! The id in the token is public (it is what `mezz token ls` lists and
//! what logs may name); the secret never leaves the token's holder except
//! to the master, and is never printed by a `Debug` of [`Token`].

use std::fmt;
use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};

/// The prefix of every token, so a leaked one is recognisable (and
/// greppable) as ours.
pub const TOKEN_PREFIX: &str = "mezz";
/// Hex digits in a token id (64 random bits).
pub const ID_HEX_LEN: usize = 16;
/// Hex digits in a token secret (256 random bits).
pub const SECRET_HEX_LEN: usize = 64;
/// The environment variable clients read a token from.
pub const TOKEN_ENV: &str = "MEZZ_TOKEN";
/// The environment variable naming a credentials file.
pub const CREDENTIALS_ENV: &str = "MEZZ_CREDENTIALS";

/// A bearer token: a public id and a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

/// Why a token or a credentials file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The text is not a token.
    #[error("{0}")]
    Malformed(String),
    /// The credentials file could not be read.
    #[error("credentials file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Others may read the credentials file.
    #[error(
        "credentials file {path} has mode {mode:o}: others could read the token in it; \
         make it private with `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Token {
    /// A fresh token with 64 random bits of id and 256 of secret, from the
    /// operating system's random source.
    pub fn generate() -> Result<Token, String> {
        let mut bytes = [0u8; ID_HEX_LEN / 2 + SECRET_HEX_LEN / 2];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        Ok(Token {
            id: hex(&bytes[..ID_HEX_LEN / 2]),
            secret: hex(&bytes[ID_HEX_LEN / 2..]),
        })
    }

    /// Parses `mezz_<id>_<secret>` (surrounding blanks ignored). The error
    /// never repeats the text, which may be a secret pasted wrongly.
    pub fn parse(text: &str) -> Result<Token, CredentialsError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '_');
        let (prefix, id, secret) = (parts.next(), parts.next(), parts.next());
        match (prefix, id, secret) {
            (Some(TOKEN_PREFIX), Some(id), Some(secret))
                if is_hex(id, ID_HEX_LEN) && is_hex(secret, SECRET_HEX_LEN) =>
            {
                Ok(Token {
                    id: id.to_ascii_lowercase(),
                    secret: secret.to_ascii_lowercase(),
                })
            }
            _ => Err(CredentialsError::Malformed(format!(
                "not a Mezzanine token: a token reads {TOKEN_PREFIX}_<{ID_HEX_LEN} hex digits>_<{SECRET_HEX_LEN} hex digits>, \
                 as `mezz token create` prints it"
            ))),
        }
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret: for hashing and for the wire only.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole token as its holder keeps it. Never log this.
    pub fn expose(&self) -> String {
        format!("{TOKEN_PREFIX}_{}_{}", self.id, self.secret)
    }

    /// Reads a token from a credentials file, refusing one that others
    /// may read (mode must be 0600 or stricter).
    pub fn from_file(path: &Path) -> Result<Token, CredentialsError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| CredentialsError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::TooOpen { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(|e| CredentialsError::Unreadable {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Token::parse(&text).map_err(|e| CredentialsError::Unreadable {
            path: shown,
            reason: e.to_string(),
        })
    }

    /// Writes the token to a new file of mode 0600 (never over an existing
    /// one), fsynced.
    pub fn write_new_file(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(format!("{}\n", self.expose()).as_bytes())?;
        f.sync_all()
    }

    /// The token a client presents: the credentials file given (a flag,
    /// else `$MEZZ_CREDENTIALS`), else `$MEZZ_TOKEN`, else none.
    pub fn from_env_or_file(file: Option<&Path>) -> Result<Option<Token>, CredentialsError> {
        let env_file = std::env::var_os(CREDENTIALS_ENV).filter(|v| !v.is_empty());
        if let Some(path) = file.map(Path::to_path_buf).or(env_file.map(Into::into)) {
            return Token::from_file(&path).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => Token::parse(&t)
                .map(Some)
                .map_err(|e| CredentialsError::Malformed(format!("${TOKEN_ENV}: {e}"))),
            _ => Ok(None),
        }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}, secret hidden)", self.id)
    }
}

/// The value of the `authorization` header for a token.
pub fn bearer_header(token: &Token) -> String {
    format!("Bearer {}", token.expose())
}

/// A tonic interceptor that adds `authorization: Bearer <token>` to every
/// call, or nothing when there is no token (a cluster without
/// authentication).
#[derive(Clone, Default)]
pub struct Bearer {
    value: Option<MetadataValue<Ascii>>,
}

impl Bearer {
    /// An interceptor presenting `token`, if any.
    pub fn new(token: Option<&Token>) -> Self {
        Bearer {
            // A token is ASCII by construction: it always parses.
            value: token.and_then(|t| bearer_header(t).parse().ok()),
        }
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.value.is_some() {
            "Bearer(token hidden)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry a token.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// Wraps `channel` so that every call presents `token`.
pub fn authed(channel: tonic::transport::Channel, token: Option<&Token>) -> AuthChannel {
    tonic::service::interceptor::InterceptedService::new(channel, Bearer::new(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret() {
        let t = Token::generate().unwrap();
        assert_eq!(t.id().len(), ID_HEX_LEN);
        let text = t.expose();
        assert!(text.starts_with("mezz_"));
        assert_eq!(Token::parse(&format!(" {text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains(t.secret()));
        assert!(format!("{t:?}").contains(t.id()));
        assert_ne!(Token::generate().unwrap(), t);
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        for bad in [
            "",
            "mezz",
            "mezz__",
            "abc_0123456789abcdef_00",
            &format!("mezz_0123456789abcdef_{}", "g".repeat(SECRET_HEX_LEN)),
            &format!("mezz_0123456789abcde_{}", "a".repeat(SECRET_HEX_LEN)),
        ] {
            let e = Token::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not a Mezzanine token"), "{e}");
            // (the short ones are words of the message itself)
            if bad.len() > 6 {
                assert!(!e.contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn credentials_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        let t = Token::generate().unwrap();
        t.write_new_file(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(Token::from_file(&path).unwrap(), t);
        assert!(t.write_new_file(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(Token::from_file(&path).is_ok(), "stricter is fine");
        let e = Token::from_file(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, CredentialsError::Unreadable { .. }));
    }
}
