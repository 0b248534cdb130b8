//! Reading what a Spark application is called out of `spark-submit`'s output.
//!
//! Where the id appears depends on the cluster manager:
//! - YARN: `Submitted application application_1700000000000_0001`;
//! - standalone: `Connected to Spark cluster with app ID app-20231121163700-0000` (and, in
//!   cluster deploy mode, `Driver successfully submitted as driver-20231121163700-0000`);
//! - local mode prints no id at all (`local-1700000000000`), so the plugin asks the driver's UI,
//!   whose address is in the log: `Start Jetty 127.0.0.1:4040 for SparkUI`, `Successfully
//!   started service 'SparkUI' on port 4040`, `Bound SparkUI to 0.0.0.0, and started at
//!   http://host:4040`.

/// One piece of an id pattern after its literal prefix.
#[derive(Clone, Copy)]
enum Part {
    /// A run of `min..=max` ASCII digits.
    Digits(usize, usize),
    /// One literal byte.
    Lit(u8),
}

/// The Spark application id patterns: local, standalone, YARN.
const APP_ID_PATTERNS: [(&str, &[Part]); 3] = [
    ("local-", &[Part::Digits(10, 16)]),
    (
        "app-",
        &[Part::Digits(14, 14), Part::Lit(b'-'), Part::Digits(4, 10)],
    ),
    (
        "application_",
        &[Part::Digits(10, 16), Part::Lit(b'_'), Part::Digits(4, 10)],
    ),
];

/// A standalone cluster-mode driver id.
const DRIVER_ID_PATTERN: (&str, &[Part]) = (
    "driver-",
    &[Part::Digits(14, 14), Part::Lit(b'-'), Part::Digits(4, 10)],
);

/// The first Spark application id in `line`, if any.
pub fn find_app_id(line: &str) -> Option<&str> {
    // The earliest match in the line, whatever its pattern.
    APP_ID_PATTERNS
        .iter()
        .filter_map(|(prefix, parts)| find_pattern(line, prefix, parts))
        .min_by_key(|(start, _)| *start)
        .map(|(start, end)| &line[start..end])
}

/// The first standalone driver id (`driver-20231121163700-0000`) in `line`, if any.
pub fn find_driver_id(line: &str) -> Option<&str> {
    let (prefix, parts) = DRIVER_ID_PATTERN;
    find_pattern(line, prefix, parts).map(|(start, end)| &line[start..end])
}

/// Where `prefix` followed by `parts` first occurs in `line` as a whole word.
fn find_pattern(line: &str, prefix: &str, parts: &[Part]) -> Option<(usize, usize)> {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(offset) = line[from..].find(prefix) {
        let start = from + offset;
        from = start + 1;
        let starts_word = start == 0 || !is_word_byte(bytes[start - 1]);
        if !starts_word {
            continue;
        }
        if let Some(end) = match_parts(bytes, start + prefix.len(), parts) {
            if end == bytes.len() || !is_word_byte(bytes[end]) {
                return Some((start, end));
            }
        }
    }
    None
}

fn match_parts(bytes: &[u8], mut i: usize, parts: &[Part]) -> Option<usize> {
    for part in parts {
        match *part {
            Part::Lit(b) => {
                if bytes.get(i) != Some(&b) {
                    return None;
                }
                i += 1;
            }
            Part::Digits(min, max) => {
                let run = bytes[i.min(bytes.len())..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if run < min || run > max {
                    return None;
                }
                i += run;
            }
        }
    }
    Some(i)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// What a log line tells about the driver's UI.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UiAddress {
    /// The host it is bound to, if the line said.
    pub host: Option<String>,
    /// Its port, if the line said.
    pub port: Option<u16>,
}

impl UiAddress {
    /// Adds what `line` says about the UI's address.
    pub fn learn(&mut self, line: &str) {
        // Spark 3.4+: "Start Jetty 127.0.0.1:4040 for SparkUI".
        if let Some((_, rest)) = line.split_once("Start Jetty ") {
            if let Some((addr, _)) = rest.split_once(" for SparkUI") {
                if let Some((host, port)) = addr.rsplit_once(':') {
                    if let Ok(port) = port.parse() {
                        self.host = Some(host.to_owned());
                        self.port = Some(port);
                    }
                }
            }
        }
        // "Successfully started service 'SparkUI' on port 4040."
        if let Some(rest) = line
            .split("Successfully started service 'SparkUI' on port ")
            .nth(1)
        {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(port) = digits.parse() {
                self.port = Some(port);
            }
        }
        // "Bound SparkUI to 0.0.0.0, and started at http://host:4040"
        if let Some(rest) = line.split("Bound SparkUI to ").nth(1) {
            if let Some((host, _)) = rest.split_once(',') {
                if self.host.is_none() {
                    self.host = Some(host.trim().to_owned());
                }
            }
            if let Some(url) = rest.split("started at http://").nth(1) {
                let port: String = url
                    .rsplit_once(':')
                    .map(|(_, p)| p.chars().take_while(char::is_ascii_digit).collect())
                    .unwrap_or_default();
                if let Ok(port) = port.parse() {
                    self.port = Some(port);
                }
            }
        }
    }

    /// The UI's base URL, once its port is known: on its bound host, or on loopback when it is
    /// bound to every address (or the host is unknown).
    pub fn url(&self) -> Option<String> {
        let port = self.port?;
        let host = match self.host.as_deref() {
            None | Some("") | Some("0.0.0.0") | Some("::") | Some("[::]") => "127.0.0.1",
            Some(host) => host,
        };
        Some(format!("http://{host}:{port}"))
    }
}

/// The application id in a driver UI's `GET /api/v1/applications` answer.
pub fn app_id_from_ui(body: &serde_json::Value) -> Option<String> {
    let id = body.as_array()?.first()?.get("id")?.as_str()?;
    find_app_id(id)
        .filter(|found| *found == id)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn app_ids_of_every_cluster_manager() {
        let cases = [
            (
                "24/01/02 10:00:00 INFO Client: Submitted application application_1700000000000_0001",
                "application_1700000000000_0001",
            ),
            (
                "24/01/02 10:00:00 INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-20231121163700-0000",
                "app-20231121163700-0000",
            ),
            (
                "Logging events to file:/tmp/spark-events/local-1700000000000.inprogress",
                "local-1700000000000",
            ),
            ("local-1700000000000", "local-1700000000000"),
        ];
        for (line, id) in cases {
            assert_eq!(find_app_id(line), Some(id), "{line}");
        }
    }

    #[test]
    fn look_alikes_are_not_ids() {
        for line in [
            "26/11/21 16:36:51 INFO SparkContext: Running Spark version 4.0.1",
            "local-12345",                     // too short for a timestamp
            "nonlocal-1700000000000",          // not a word of its own
            "my-app-20231121163700-0000",      // inside another name
            "app-2023112116370-0000",          // 13 digits
            "application_1700000000000_0001x", // runs on
            "application_1700000000000",       // no sequence number
            "26/11/21 16:36:53 INFO Executor: Starting executor ID driver on host localhost",
        ] {
            assert_eq!(find_app_id(line), None, "{line}");
        }
    }

    #[test]
    fn the_earliest_id_in_a_line_wins() {
        let line = "app-20231121163700-0000 then application_1700000000000_0001";
        assert_eq!(find_app_id(line), Some("app-20231121163700-0000"));
    }

    #[test]
    fn driver_ids() {
        let line = "Driver successfully submitted as driver-20231121163700-0003";
        assert_eq!(find_driver_id(line), Some("driver-20231121163700-0003"));
        assert_eq!(find_driver_id("driver-1"), None);
        assert_eq!(find_app_id(line), None);
    }

    #[test]
    fn the_ui_address_from_spark_4_logs() {
        let mut ui = UiAddress::default();
        assert_eq!(ui.url(), None);
        ui.learn("26/11/21 16:36:52 INFO JettyUtils: Start Jetty 127.0.0.1:4041 for SparkUI");
        ui.learn(
            "26/11/21 16:36:52 INFO Utils: Successfully started service 'SparkUI' on port 4041.",
        );
        assert_eq!(ui.url().as_deref(), Some("http://127.0.0.1:4041"));
    }

    #[test]
    fn the_ui_address_from_older_logs() {
        let mut ui = UiAddress::default();
        ui.learn("INFO Utils: Successfully started service 'SparkUI' on port 4040.");
        assert_eq!(ui.url().as_deref(), Some("http://127.0.0.1:4040"));
        ui.learn("INFO SparkUI: Bound SparkUI to 0.0.0.0, and started at http://10.1.2.3:4042");
        assert_eq!(ui.url().as_deref(), Some("http://127.0.0.1:4042"));
        let mut ui = UiAddress::default();
        ui.learn("INFO SparkUI: Bound SparkUI to 10.1.2.3, and started at http://h:4043");
        assert_eq!(ui.url().as_deref(), Some("http://10.1.2.3:4043"));
        let mut ui = UiAddress::default();
        ui.learn("nothing to see; Start Jetty nowhere for SparkUI");
        assert_eq!(ui, UiAddress::default());
    }

    #[test]
    fn the_app_id_from_the_ui_api() {
        let body = json!([{"id": "local-1700000000000", "name": "ok.py", "attempts": []}]);
        assert_eq!(
            app_id_from_ui(&body).as_deref(),
            Some("local-1700000000000")
        );
        assert_eq!(app_id_from_ui(&json!([])), None);
        assert_eq!(app_id_from_ui(&json!({"id": "local-1700000000000"})), None);
        assert_eq!(app_id_from_ui(&json!([{"id": "weird id"}])), None);
    }
}
