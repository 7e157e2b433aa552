//! The client half of a daemon's local API, as a framework's command line
//! uses it: each request carries the bearer secret of `daemon.json`, and
//! an error answer's `{"error": "…"}` body comes back as its text. What a
//! status means (a bad request, a name not found) is the framework's to
//! say, in its own error type.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http;

/// The body of a local API's error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// Why a call to a local API failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The daemon could not be reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// It answered an error status, with this text.
    #[error("answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` of its body, else the body itself.
        message: String,
    },
    /// Its answer is not what was asked for.
    #[error("its answer is not understood: {0}")]
    Garbled(String),
}

/// A client of a local API at `address` (`127.0.0.1:PORT`) with `secret`.
#[derive(Clone, Debug)]
pub struct LocalClient {
    address: String,
    authorization: String,
    timeout: Duration,
}

impl LocalClient {
    /// A client of the API at `address`, proving itself with `secret`;
    /// each call gets `timeout`.
    pub fn new(address: &str, secret: &str, timeout: Duration) -> LocalClient {
        LocalClient {
            address: address.to_string(),
            authorization: format!("Bearer {secret}"),
            timeout,
        }
    }

    /// Sends `method path` with an optional JSON `body`; any status comes
    /// back as an answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<http::Response, CallError> {
        http::request(
            &self.address,
            method,
            path,
            &[("Authorization", &self.authorization)],
            body,
            self.timeout,
        )
        .await
        .map_err(CallError::Unreachable)
    }

    /// Sends `method path` with `body` encoded as JSON when given, and
    /// decodes a success's JSON answer; an error status is
    /// [`CallError::Refused`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CallError::Garbled(format!("cannot encode the request: {e}")))?;
        decode(self.call(method, path, body.as_deref()).await?)
    }
}

/// A success's JSON, or the error answer as [`CallError::Refused`].
pub fn decode<T: DeserializeOwned>(r: http::Response) -> Result<T, CallError> {
    if r.status >= 400 {
        let message = serde_json::from_slice::<ErrorBody>(&r.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| r.text());
        return Err(CallError::Refused {
            status: r.status,
            message,
        });
    }
    serde_json::from_slice(&r.body).map_err(|e| CallError::Garbled(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_carry_their_text() {
        let refused = http::Response {
            status: 404,
            body: br#"{"error":"no service named 'm'"}"#.to_vec(),
        };
        assert_eq!(
            decode::<serde_json::Value>(refused),
            Err(CallError::Refused {
                status: 404,
                message: "no service named 'm'".into()
            })
        );
        let plain = http::Response {
            status: 401,
            body: b"missing or wrong secret".to_vec(),
        };
        assert!(matches!(
            decode::<serde_json::Value>(plain),
            Err(CallError::Refused { status: 401, message }) if message == "missing or wrong secret"
        ));
        let ok = http::Response {
            status: 200,
            body: b"[1,2]".to_vec(),
        };
        assert_eq!(decode::<Vec<u32>>(ok), Ok(vec![1, 2]));
        let garbled = http::Response {
            status: 200,
            body: b"<html>".to_vec(),
        };
        assert!(matches!(
            decode::<Vec<u32>>(garbled),
            Err(CallError::Garbled(_))
        ));
    }
}
