//! `SdkError`: why [`crate::DriverBuilder::run`] ended without the scheduler
//! asking it to. Failed individual calls are not errors of `run`; they go to
//! [`crate::Scheduler::error`].

use std::fmt;
use std::time::Duration;

/// Why a driver stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The driver was configured wrongly (no masters, a bad address, ...).
    #[error("invalid driver configuration: {0}")]
    Config(String),

    /// No master could be reached within the connect timeout.
    #[error(
        "framework '{framework}' could not subscribe to any master within {:.1?}; tried {}; \
         check that a master listens there (`--master ADDR[,ADDR…]`)",
        waited,
        Attempts(attempts)
    )]
    Unreachable {
        /// The framework's name.
        framework: String,
        /// How long the driver tried.
        waited: Duration,
        /// Every address tried with the last error it gave.
        attempts: Vec<(String, String)>,
    },

    /// A master refused the subscription for good (unknown protocol version,
    /// invalid framework info, unknown framework id, ...).
    #[error("master {address} refused framework '{framework}': {message}")]
    Refused {
        /// The framework's name.
        framework: String,
        /// The master that refused.
        address: String,
        /// The master's message.
        message: String,
    },

    /// The master removed the framework (its `Error` event).
    #[error("framework '{framework}' (id {framework_id}) was removed by the master: {message}")]
    Removed {
        /// The framework's name.
        framework: String,
        /// The framework's id.
        framework_id: String,
        /// The master's message.
        message: String,
    },

    /// The framework id file could not be read or written. Without it a
    /// restarted scheduler would register anew and lose its tasks, so the
    /// driver stops instead of going on without it.
    #[error("framework id file {}: {message}", path.display())]
    FrameworkIdFile {
        /// The file, as given to
        /// [`DriverBuilder::framework_id_file`](crate::DriverBuilder::framework_id_file).
        path: std::path::PathBuf,
        /// What went wrong and what to do.
        message: String,
    },

    /// `teardown()` was asked for but the master did not confirm it.
    #[error("teardown of framework '{framework}' (id {framework_id}) failed: {message}")]
    Teardown {
        /// The framework's name.
        framework: String,
        /// The framework's id.
        framework_id: String,
        /// What went wrong.
        message: String,
    },
}

/// Formats `addr (error), addr (error)`.
struct Attempts<'a>(&'a [(String, String)]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no address");
        }
        for (i, (addr, err)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr} ({err})")?;
        }
        Ok(())
    }
}

/// An error with its whole `source()` chain, because tonic's transport
/// errors say only "transport error" at the top.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_every_address() {
        let e = SdkError::Unreachable {
            framework: "hello".into(),
            waited: Duration::from_secs(10),
            attempts: vec![
                ("127.0.0.1:5050".into(), "connection refused".into()),
                ("10.0.0.2:5050".into(), "timed out".into()),
            ],
        };
        let text = e.to_string();
        assert!(text.contains("'hello'"), "{text}");
        assert!(
            text.contains("127.0.0.1:5050 (connection refused)"),
            "{text}"
        );
        assert!(text.contains("10.0.0.2:5050 (timed out)"), "{text}");
    }

    #[test]
    fn chain_includes_sources() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(chain(&Outer(inner)), "transport error: refused");
    }
}
