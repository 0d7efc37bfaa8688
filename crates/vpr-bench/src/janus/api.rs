//! The Janus HTTP API (the `janus.transport.http` plugin): a session with a
//! keepalive task, plugin handles on it, synchronous plugin requests, and
//! asynchronous ones whose result arrives as an event on the session's
//! long-poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Time between keepalives; Janus ends a session after 60 s without one by
/// default.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long one asynchronous request may take, long-polls included.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Timeout of one HTTP request; a long-poll returns within 30 s.
const HTTP_TIMEOUT: Duration = Duration::from_secs(40);

/// Failure of a Janus API call.
#[derive(Debug, thiserror::Error)]
pub enum JanusError {
    /// The HTTP request failed or its body was not JSON.
    #[error("HTTP request to {url} failed: {source}")]
    Http {
        /// URL of the request.
        url: String,
        /// Underlying error.
        source: reqwest::Error,
    },

    /// Janus returned `"janus": "error"`.
    #[error("Janus refused {request}: {code} {reason}")]
    Refused {
        /// The request, e.g. `attach`.
        request: String,
        /// Janus error code.
        code: i64,
        /// Janus error text.
        reason: String,
    },

    /// The VideoRoom plugin returned an error.
    #[error("VideoRoom refused {request}: {code} {reason}")]
    PluginRefused {
        /// The plugin request, e.g. `join`.
        request: String,
        /// Plugin error code.
        code: i64,
        /// Plugin error text.
        reason: String,
    },

    /// A response or event lacked a field the protocol requires.
    #[error("unexpected answer to {request}: {detail}")]
    Unexpected {
        /// The request.
        request: String,
        /// Description of the problem, with the response.
        detail: String,
    },

    /// No event for an asynchronous request arrived in time.
    #[error("no answer to {request} within {after:?}")]
    Timeout {
        /// The request.
        request: String,
        /// How long the client waited.
        after: Duration,
    },
}

/// An SDP offer or answer as Janus carries it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jsep {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP.
    pub sdp: String,
    /// Whether candidates follow by trickle; the clients here put every
    /// candidate in the SDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trickle: Option<bool>,
}

impl Jsep {
    /// Wraps a complete offer (no trickle).
    pub fn offer(sdp: String) -> Self {
        Self {
            kind: "offer".to_owned(),
            sdp,
            trickle: Some(false),
        }
    }

    /// Wraps a complete answer (no trickle).
    pub fn answer(sdp: String) -> Self {
        Self {
            kind: "answer".to_owned(),
            sdp,
            trickle: Some(false),
        }
    }
}

/// A Janus session with its keepalive task.
pub struct JanusSession {
    http: reqwest::Client,
    url: String,
    id: u64,
    transactions: AtomicU64,
    keepalive: JoinHandle<()>,
}

impl JanusSession {
    /// Creates a session on the Janus server at `base_url`
    /// (e.g. `http://127.0.0.1:8088/janus`) and starts its keepalives.
    pub async fn create(base_url: &str) -> Result<Self, JanusError> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|source| JanusError::Http {
                url: base_url.to_owned(),
                source,
            })?;
        let base_url = base_url.trim_end_matches('/');
        let response = post(
            &http,
            base_url,
            json!({"janus": "create", "transaction": "create"}),
        )
        .await?;
        let id = success_data_id(&response, "create")?;
        let url = format!("{base_url}/{id}");
        let keepalive = tokio::spawn(keep_alive(http.clone(), url.clone()));
        tracing::debug!(session = id, "Janus session created");
        Ok(Self {
            http,
            url,
            id,
            transactions: AtomicU64::new(0),
            keepalive,
        })
    }

    /// Returns the session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Attaches a handle of `plugin` (e.g. `janus.plugin.videoroom`).
    pub async fn attach(&self, plugin: &str) -> Result<u64, JanusError> {
        let body = json!({"janus": "attach", "plugin": plugin, "transaction": self.transaction()});
        let response = post(&self.http, &self.url, body).await?;
        success_data_id(&response, "attach")
    }

    /// Sends a plugin request that the plugin handles synchronously (VideoRoom
    /// `create`, `destroy`) and returns the plugin's data.
    pub async fn request(&self, handle: u64, body: Value) -> Result<Value, JanusError> {
        let name = request_name(&body);
        let message = json!({"janus": "message", "body": body, "transaction": self.transaction()});
        let response = post(&self.http, &format!("{}/{handle}", self.url), message).await?;
        check_janus(&response, &name)?;
        let data = response
            .pointer("/plugindata/data")
            .cloned()
            .ok_or_else(|| unexpected(&name, &response))?;
        check_plugin(&data, &name)?;
        Ok(data)
    }

    /// Sends a plugin request whose result arrives as an event (VideoRoom `join`,
    /// `publish`, `start`), with an optional JSEP, and waits on the
    /// long-poll for the event of the same transaction. Returns the
    /// plugin's data and the event's JSEP, if any.
    pub async fn request_async(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Jsep>,
    ) -> Result<(Value, Option<Jsep>), JanusError> {
        let name = request_name(&body);
        let transaction = self.transaction();
        let mut message = json!({"janus": "message", "body": body, "transaction": transaction});
        if let Some(jsep) = jsep {
            message["jsep"] = serde_json::to_value(jsep).expect("a JSEP serializes");
        }
        let response = post(&self.http, &format!("{}/{handle}", self.url), message).await?;
        check_janus(&response, &name)?;

        let event = tokio::time::timeout(EVENT_TIMEOUT, self.wait_event(&transaction, &name))
            .await
            .map_err(|_| JanusError::Timeout {
                request: name.clone(),
                after: EVENT_TIMEOUT,
            })??;
        let data = event
            .pointer("/plugindata/data")
            .cloned()
            .ok_or_else(|| unexpected(&name, &event))?;
        check_plugin(&data, &name)?;
        let jsep = match event.get("jsep") {
            Some(jsep) => Some(serde_json::from_value(jsep.clone()).map_err(|error| {
                JanusError::Unexpected {
                    request: name.clone(),
                    detail: format!("invalid jsep: {error}"),
                }
            })?),
            None => None,
        };
        Ok((data, jsep))
    }

    /// Long-polls the session until the event of `transaction` arrives;
    /// other events are logged and dropped.
    async fn wait_event(&self, transaction: &str, name: &str) -> Result<Value, JanusError> {
        let url = format!("{}?maxev=1", self.url);
        loop {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|source| JanusError::Http {
                    url: url.clone(),
                    source,
                })?;
            let event: Value = response.json().await.map_err(|source| JanusError::Http {
                url: url.clone(),
                source,
            })?;
            check_janus(&event, name)?;
            if event.get("transaction").and_then(Value::as_str) == Some(transaction) {
                return Ok(event);
            }
            tracing::trace!(%event, "Janus event skipped");
        }
    }

    /// Destroys the session, which detaches its handles and hangs up their
    /// peer connections.
    pub async fn destroy(self) -> Result<(), JanusError> {
        self.keepalive.abort();
        let body = json!({"janus": "destroy", "transaction": self.transaction()});
        let response = post(&self.http, &self.url, body).await?;
        check_janus(&response, "destroy")
    }

    fn transaction(&self) -> String {
        format!("t{}", self.transactions.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

async fn keep_alive(http: reqwest::Client, url: String) {
    let mut interval = tokio::time::interval(KEEPALIVE_INTERVAL);
    interval.tick().await;
    loop {
        interval.tick().await;
        let body = json!({"janus": "keepalive", "transaction": "keepalive"});
        if let Err(error) = post(&http, &url, body).await {
            tracing::warn!(%error, "Janus keepalive failed");
        }
    }
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value, JanusError> {
    let http_error = |source| JanusError::Http {
        url: url.to_owned(),
        source,
    };
    http.post(url)
        .json(&body)
        .send()
        .await
        .map_err(http_error)?
        .json()
        .await
        .map_err(http_error)
}

fn request_name(body: &Value) -> String {
    body.get("request")
        .and_then(Value::as_str)
        .unwrap_or("message")
        .to_owned()
}

fn unexpected(request: &str, answer: &Value) -> JanusError {
    JanusError::Unexpected {
        request: request.to_owned(),
        detail: answer.to_string(),
    }
}

fn check_janus(response: &Value, request: &str) -> Result<(), JanusError> {
    if response.get("janus").and_then(Value::as_str) != Some("error") {
        return Ok(());
    }
    Err(JanusError::Refused {
        request: request.to_owned(),
        code: response
            .pointer("/error/code")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        reason: response
            .pointer("/error/reason")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

fn check_plugin(data: &Value, request: &str) -> Result<(), JanusError> {
    let Some(code) = data.get("error_code").and_then(Value::as_i64) else {
        return Ok(());
    };
    Err(JanusError::PluginRefused {
        request: request.to_owned(),
        code,
        reason: data
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

fn success_data_id(response: &Value, request: &str) -> Result<u64, JanusError> {
    check_janus(response, request)?;
    response
        .pointer("/data/id")
        .and_then(Value::as_u64)
        .ok_or_else(|| unexpected(request, response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_error_is_reported() {
        let data = json!({"videoroom": "event", "error_code": 426, "error": "No such room (42)"});
        let error = check_plugin(&data, "join").unwrap_err();
        assert!(
            matches!(&error, JanusError::PluginRefused { code: 426, reason, .. } if reason == "No such room (42)"),
            "{error}"
        );
        assert!(check_plugin(&json!({"videoroom": "joined", "id": 7}), "join").is_ok());
    }

    #[test]
    fn janus_error_and_session_id() {
        let refused =
            json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}});
        assert!(matches!(
            success_data_id(&refused, "attach"),
            Err(JanusError::Refused { code: 458, .. })
        ));
        let created =
            json!({"janus": "success", "transaction": "x", "data": {"id": 8_812_345_678_u64}});
        assert_eq!(success_data_id(&created, "create").unwrap(), 8_812_345_678);
    }

    #[test]
    fn jsep_round_trip() {
        let value = serde_json::to_value(Jsep::offer("v=0".to_owned())).unwrap();
        assert_eq!(
            value,
            json!({"type": "offer", "sdp": "v=0", "trickle": false})
        );
        let parsed: Jsep = serde_json::from_value(json!({"type": "answer", "sdp": "v=0"})).unwrap();
        assert_eq!(parsed.kind, "answer");
        assert_eq!(parsed.trickle, None);
    }
}
