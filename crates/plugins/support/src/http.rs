//! A small blocking HTTP client for the REST APIs plugins watch (a Flink JobManager, a Spark
//! driver's UI): plain HTTP, JSON bodies, a timeout on every call, no redirects. Plugin threads
//! call it directly; it needs no async runtime.

use std::time::Duration;

use serde_json::Value;

/// A response: its status and its body, parsed as JSON (`Value::Null` if it is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body as JSON, or `Null`.
    pub body: Value,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A client whose every call gives up after its timeout.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// A client with `timeout` per call (connecting, sending and reading included).
    pub fn new(timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Client { agent }
    }

    /// `GET url`; an error only if no response came (connection refused, timeout, bad URL).
    pub fn get(&self, url: &str) -> Result<Response, String> {
        let response = self
            .agent
            .get(url)
            .header("accept", "application/json")
            .call();
        read(url, response)
    }

    /// `PATCH url` without a body.
    pub fn patch(&self, url: &str) -> Result<Response, String> {
        let response = self
            .agent
            .patch(url)
            .header("accept", "application/json")
            .send_empty();
        read(url, response)
    }
}

fn read(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Response, String> {
    let mut response = response.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(4 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| format!("{url}: cannot read the response: {e}"))?;
    Ok(Response {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// Serves one request with `reply` and returns the request line it got.
    fn serve_once(reply: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut stream = stream;
            stream.write_all(reply.as_bytes()).unwrap();
            first.trim_end().to_owned()
        });
        (base, handle)
    }

    #[test]
    fn get_parses_json_whatever_the_status() {
        let (base, server) = serve_once(
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\
             connection: close\r\n\r\n{\"errors\": [\"nope\"]}",
        );
        let r = Client::new(Duration::from_secs(5))
            .get(&format!("{base}/jobs/x"))
            .unwrap();
        assert_eq!(r.status, 404);
        assert!(!r.is_success());
        assert_eq!(r.body["errors"][0], "nope");
        assert_eq!(server.join().unwrap(), "GET /jobs/x HTTP/1.1");
    }

    #[test]
    fn patch_sends_no_body_and_a_non_json_body_is_null() {
        let (base, server) =
            serve_once("HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        let r = Client::new(Duration::from_secs(5))
            .patch(&format!("{base}/jobs/x?mode=cancel"))
            .unwrap();
        assert_eq!((r.status, r.body.clone()), (202, Value::Null));
        assert!(r.is_success());
        assert_eq!(server.join().unwrap(), "PATCH /jobs/x?mode=cancel HTTP/1.1");
    }

    #[test]
    fn a_closed_port_is_an_error_naming_the_url() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/overview");
        let err = Client::new(Duration::from_secs(5)).get(&url).unwrap_err();
        assert!(err.starts_with(&url), "{err}");
    }
}
