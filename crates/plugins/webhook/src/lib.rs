//! # aloha-listener-webhook
//!
//! The `webhook` listener plugin: POSTs every event of the master, as JSON, to a URL, retrying
//! with exponential backoff while the receiver is down or overloaded. Built as
//! `libaloha_listener_webhook.so` and loaded by the master through `aloha-plugin`'s ABI.
//!
//! ## Configuration
//! ```json
//! {
//!   "url": "http://127.0.0.1:9000/hook",
//!   "timeout_ms": 5000,
//!   "max_attempts": 5,
//!   "initial_backoff_ms": 200,
//!   "max_backoff_ms": 10000,
//!   "headers": {"authorization": "Bearer ..."}
//! }
//! ```
//! - `url` (required): where to POST. Plain `http://` only: this build has no TLS (put a local
//!   TLS-terminating proxy in front for an `https` receiver).
//! - `timeout_ms` (default 5000): the limit for one request, from connecting to reading the
//!   answer's head.
//! - `max_attempts` (default 5, at least 1): requests per delivery, the first included.
//! - `initial_backoff_ms` (default 200) and `max_backoff_ms` (default 10000): the wait before the
//!   first retry, doubled for each later one, never more than the maximum.
//! - `headers` (default none): extra request headers. The ones this plugin sets itself
//!   (`content-type`, `content-length`, `host`, `x-aloha-event-*`) cannot be given.
//!
//! Any other key is refused when the listener is created.
//!
//! ## Behaviour
//! - Each event is POSTed as its JSON, with `content-type: application/json`,
//!   `x-aloha-event-seq: <seq>` and `x-aloha-event-type: <type>`. Receivers should deduplicate by
//!   the sequence number: delivery is at least once.
//! - A 2xx answer delivers the event. A connection error, a timeout, a 5xx or a 429 is retried
//!   after the backoff, up to `max_attempts` requests; when they are spent, the delivery fails and
//!   the master delivers the event again later. Any other answer (a 4xx, a 3xx: redirects are not
//!   followed) fails the delivery at once: sending the same request again would not help.
//! - Proxy environment variables are ignored: the plugin connects to `url` directly.
//! - The plugin blocks the master's thread for this listener while it retries, never the
//!   master's scheduling; it runs no async runtime of its own.

#![warn(missing_docs)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use aloha_plugin::EventListener;
use backon::{BlockingRetryable, ExponentialBuilder};
use serde::Deserialize;
use serde_json::Value;
use ureq::http::{HeaderName, HeaderValue, Uri};

/// The listener's name.
pub const NAME: &str = "webhook";

aloha_plugin::declare_listener!(name = NAME, listener = WebhookListener);

/// Headers the plugin sets itself, which the configuration may not override.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "x-aloha-event-seq",
    "x-aloha-event-type",
];

/// How much of an error answer's body is quoted in the error message.
const BODY_EXCERPT_BYTES: u64 = 512;

/// The listener's configuration (see the crate docs for the meaning and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to POST.
    pub url: String,
    /// Limit for one request, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests per delivery, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between two attempts, in milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_initial_backoff_ms() -> u64 {
    200
}
fn default_max_backoff_ms() -> u64 {
    10_000
}

impl Config {
    /// Checks the values serde cannot: the URL, the bounds, the headers.
    fn validate(&self) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e| format!("`url` {:?} is not a URL: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`url` {:?}: https is not supported (this plugin speaks plain HTTP)",
                    self.url
                ))
            }
            _ => return Err(format!("`url` {:?} must start with http://", self.url)),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`url` {:?} has no host", self.url));
        }
        if self.timeout_ms == 0 {
            return Err("`timeout_ms` must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return Err("`max_attempts` must be at least 1".into());
        }
        if self.initial_backoff_ms > self.max_backoff_ms {
            return Err(format!(
                "`initial_backoff_ms` ({}) is larger than `max_backoff_ms` ({})",
                self.initial_backoff_ms, self.max_backoff_ms
            ));
        }
        self.headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`headers`: {name:?} is not a header name"))?;
                if RESERVED_HEADERS.contains(&name.as_str()) {
                    return Err(format!("`headers`: {name} is set by the plugin itself"));
                }
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("`headers`: the value of {name} is not a header value"))?;
                Ok((name, value))
            })
            .collect()
    }
}

/// Why one request did not deliver an event.
#[derive(Debug)]
enum Failure {
    /// No answer: the connection failed, timed out or broke. Worth retrying.
    Transport(String),
    /// An answer that is not 2xx; worth retrying for 5xx and 429.
    Status {
        /// The status code.
        code: u16,
        /// The start of the answer's body, for the error message.
        body: String,
    },
}

impl Failure {
    fn is_retryable(&self) -> bool {
        match self {
            Failure::Transport(_) => true,
            Failure::Status { code, .. } => *code == 429 || (500..=599).contains(code),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(e) => f.write_str(e),
            Failure::Status { code, body } if body.is_empty() => write!(f, "answered {code}"),
            Failure::Status { code, body } => write!(f, "answered {code}: {body}"),
        }
    }
}

/// POSTs events to [`Config::url`].
pub struct WebhookListener {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    max_attempts: u32,
    backoff: ExponentialBuilder,
    agent: ureq::Agent,
}

impl std::fmt::Debug for WebhookListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers are left out: they often carry credentials.
        f.debug_struct("WebhookListener")
            .field("url", &self.url)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl WebhookListener {
    /// A listener for `config`, or what is wrong with it.
    pub fn new(config: Config) -> Result<WebhookListener, String> {
        let headers = config
            .validate()
            .map_err(|e| format!("invalid webhook listener configuration: {e}"))?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            // Answers are classified here, not turned into errors by the client.
            .http_status_as_error(false)
            // A redirect is an answer to report, not to follow with the event.
            .max_redirects(0)
            .proxy(None)
            .build()
            .new_agent();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(config.initial_backoff_ms))
            .with_max_delay(Duration::from_millis(config.max_backoff_ms))
            .with_factor(2.0)
            .with_max_times(config.max_attempts as usize - 1);
        Ok(WebhookListener {
            url: config.url,
            headers,
            max_attempts: config.max_attempts,
            backoff,
            agent,
        })
    }

    /// POSTs `event`, retrying as configured; `Ok` once the receiver answered 2xx.
    pub fn post(&self, event: &Value) -> Result<(), String> {
        let body = serde_json::to_vec(event)
            .map_err(|e| format!("cannot encode event {}: {e}", event["seq"]))?;
        let seq = event["seq"].as_u64();
        let event_type = event["type"].as_str().unwrap_or_default();
        let attempts = Cell::new(0_u32);
        let result = (|| {
            attempts.set(attempts.get() + 1);
            self.post_once(&body, seq, event_type)
        })
        .retry(self.backoff)
        .sleep(std::thread::sleep)
        .when(Failure::is_retryable)
        .call();
        result.map_err(|failure| {
            let what = match seq {
                Some(seq) => format!("event {seq}"),
                None => "event".to_owned(),
            };
            let attempts = attempts.get();
            if failure.is_retryable() {
                let s = if attempts == 1 { "" } else { "s" };
                format!(
                    "POST {what} to {} failed after {attempts} attempt{s}: {failure}",
                    self.url
                )
            } else {
                format!("POST {what} to {}: {failure} (not retried)", self.url)
            }
        })
    }

    fn post_once(&self, body: &[u8], seq: Option<u64>, event_type: &str) -> Result<(), Failure> {
        let mut request = self
            .agent
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-aloha-event-type", event_type);
        if let Some(seq) = seq {
            request = request.header("x-aloha-event-seq", seq);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut response = request
            .send(body)
            .map_err(|e| Failure::Transport(e.to_string()))?;
        let code = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let mut excerpt = Vec::new();
        // The body only decorates the message: a failure to read it is not the error to report.
        let _ = response
            .body_mut()
            .as_reader()
            .take(BODY_EXCERPT_BYTES)
            .read_to_end(&mut excerpt);
        Err(Failure::Status {
            code,
            body: String::from_utf8_lossy(&excerpt).trim().to_owned(),
        })
    }
}

impl EventListener for WebhookListener {
    fn create(config: Value) -> Result<Self, String> {
        let config: Config = serde_json::from_value(config)
            .map_err(|e| format!("invalid webhook listener configuration: {e}"))?;
        WebhookListener::new(config)
    }

    fn on_app_state_changed(&mut self, event: &Value) -> Result<(), String> {
        self.post(event)
    }

    fn on_app_relaunched(&mut self, event: &Value) -> Result<(), String> {
        self.post(event)
    }

    fn on_other_event(&mut self, event: &Value) -> Result<(), String> {
        self.post(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(config: Value) -> Result<WebhookListener, String> {
        WebhookListener::create(config)
    }

    #[test]
    fn defaults_apply() {
        let c: Config = serde_json::from_value(json!({"url": "http://h/x"})).unwrap();
        assert_eq!(
            (
                c.timeout_ms,
                c.max_attempts,
                c.initial_backoff_ms,
                c.max_backoff_ms
            ),
            (5000, 5, 200, 10_000)
        );
        assert!(c.headers.is_empty());
        let l =
            create(json!({"url": "http://h/x", "headers": {"Authorization": "Bearer t"}})).unwrap();
        assert_eq!(l.max_attempts, 5);
        assert_eq!(l.headers[0].0.as_str(), "authorization");
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        for (config, expected) in [
            (json!({}), "missing field `url`"),
            (
                json!({"url": "http://h", "retries": 3}),
                "unknown field `retries`",
            ),
            (json!({"url": "https://h/x"}), "https is not supported"),
            (json!({"url": "ftp://h/x"}), "must start with http://"),
            (json!({"url": "/just/a/path"}), "must start with http://"),
            (json!({"url": "not a url"}), "is not a URL"),
            (
                json!({"url": "http://h", "max_attempts": 0}),
                "`max_attempts` must be at least 1",
            ),
            (
                json!({"url": "http://h", "timeout_ms": 0}),
                "`timeout_ms` must be at least 1",
            ),
            (
                json!({"url": "http://h", "initial_backoff_ms": 5, "max_backoff_ms": 1}),
                "`initial_backoff_ms` (5) is larger than `max_backoff_ms` (1)",
            ),
            (
                json!({"url": "http://h", "headers": {"bad name": "v"}}),
                "\"bad name\" is not a header name",
            ),
            (
                json!({"url": "http://h", "headers": {"k": "line\nbreak"}}),
                "the value of k is not a header value",
            ),
            (
                json!({"url": "http://h", "headers": {"Content-Type": "text/plain"}}),
                "content-type is set by the plugin itself",
            ),
            (
                json!({"url": "http://h", "headers": {"X-Aloha-Event-Seq": "1"}}),
                "x-aloha-event-seq is set by the plugin itself",
            ),
        ] {
            let err = create(config.clone()).unwrap_err();
            assert!(
                err.starts_with("invalid webhook listener configuration: ")
                    && err.contains(expected),
                "{config}: {err}"
            );
        }
    }

    #[test]
    fn only_transport_errors_5xx_and_429_are_retried() {
        let status = |code| Failure::Status {
            code,
            body: String::new(),
        };
        assert!(Failure::Transport("refused".into()).is_retryable());
        for code in [429, 500, 502, 503, 599] {
            assert!(status(code).is_retryable(), "{code}");
        }
        for code in [301, 400, 401, 404, 409, 413] {
            assert!(!status(code).is_retryable(), "{code}");
        }
    }
}
