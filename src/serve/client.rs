//! The client of `fhec serve` (`fhec client …`): the model's file, key upload, inference,
//! key deletion; every answer read with a size bound, every refusal as the server's one line.

use std::time::Duration;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (its status and one-line reason).
    #[error("{url}: {status} {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
    /// No answer: not reachable, connection dropped, timed out.
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// An answer that is not what the API promises.
    #[error("{url}: unexpected answer: {reason}")]
    Protocol { url: String, reason: String },
}

/// A connection to one `fhec serve` (or the load balancer in front of several).
pub struct HttpClient {
    base: String,
    agent: ureq::Agent,
    /// The most bytes read from one answer.
    pub max_response: u64,
}

/// Where a key was stored.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Uploaded {
    pub key_id: String,
    pub bytes: u64,
}

impl HttpClient {
    /// A client of the server at `base` (`http://host:port`), waiting at most `timeout` for
    /// any one call (an encrypted inference takes seconds per sample).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(10)))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            max_response: 1 << 31,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        &self,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        ok: u16,
    ) -> Result<Vec<u8>, ClientError> {
        let mut r = r.map_err(|e| ClientError::Transport {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        let status = r.status().as_u16();
        let limit = if status == ok {
            self.max_response
        } else {
            1 << 16
        };
        let body = r
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| ClientError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if status == ok {
            return Ok(body);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        Err(ClientError::Refused {
            url: url.to_string(),
            status,
            message,
        })
    }

    fn json<T: serde::de::DeserializeOwned>(url: &str, b: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(b).map_err(|e| ClientError::Protocol {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET /v1/models`: the models served, as JSON.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn models(&self) -> Result<serde_json::Value, ClientError> {
        let url = self.url("/v1/models");
        let b = self.answer(&url, self.agent.get(&url).call(), 200)?;
        Self::json(&url, &b)
    }

    /// `GET /v1/models/{name}`: the model's description, plan and limits.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn describe(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        let url = self.url(&format!("/v1/models/{name}"));
        let b = self.answer(&url, self.agent.get(&url).call(), 200)?;
        Self::json(&url, &b)
    }

    /// `GET /v1/models/{name}/model`: the compiled model's bytes (what the client makes keys
    /// for and encrypts with).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn model_file(&self, name: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&format!("/v1/models/{name}/model"));
        self.answer(&url, self.agent.get(&url).call(), 200)
    }

    /// `POST /v1/models/{name}/keys`: stores evaluation keys (a `server.key`'s bytes).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn upload_keys(&self, name: &str, keys: &[u8]) -> Result<Uploaded, ClientError> {
        let url = self.url(&format!("/v1/models/{name}/keys"));
        let r = self
            .agent
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(keys);
        let b = self.answer(&url, r, 201)?;
        Self::json(&url, &b)
    }

    /// `POST /v1/models/{name}/keys/{id}/infer`: runs the model on encrypted inputs (an
    /// `fhec encrypt` file's bytes); the encrypted outputs (`fhec decrypt` reads them).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn infer(&self, name: &str, key_id: &str, inputs: &[u8]) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&format!("/v1/models/{name}/keys/{key_id}/infer"));
        let r = self
            .agent
            .post(&url)
            .header("content-type", "application/octet-stream")
            .send(inputs);
        self.answer(&url, r, 200)
    }

    /// `DELETE /v1/models/{name}/keys/{id}`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub fn delete_keys(&self, name: &str, key_id: &str) -> Result<(), ClientError> {
        let url = self.url(&format!("/v1/models/{name}/keys/{key_id}"));
        self.answer(&url, self.agent.delete(&url).call(), 204)
            .map(|_| ())
    }
}
