//! `alohactl submit-batch FILE`: many submissions, sent in `POST /api/v1/apps/batch` requests of
//! at most `--chunk` apps, in file order.
//!
//! Reading FILE is apart from sending, so its three formats are tested without a master. The
//! submissions are kept as JSON and sent as they are: the master validates them and fills in
//! defaults, so a field this alohactl does not know still reaches a newer master.
//!
//! Keys: chunk `j` (from 0) carries the idempotency key `<base>.j`, and the master keys app `i`
//! of that chunk `<base>.j#i`. The base is `--idempotency-key` or one fresh random key per
//! invocation, which the error names when a chunk fails, so the whole command can be run again
//! with it: the chunks and keys only depend on the base, FILE and `--chunk`. Both limits that
//! would make a later chunk fail after earlier ones were accepted (the key's length and the
//! master's body limit) are checked before anything is sent.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cli::{Output, SubmitBatchArgs, MAX_IDEMPOTENCY_KEY_LEN};
use crate::client::{fresh_idempotency_key, Client, Served};
use crate::commands::read_input;
use crate::error::CtlError;
use crate::io::{print, Io};
use crate::output::{self, BatchResult};

/// The largest request body the master reads (its `MAX_BODY_BYTES`); a larger one is refused
/// with 413.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// The bytes of a request around its apps: `{"apps":[` and `]}`.
const ENVELOPE_BYTES: usize = r#"{"apps":[]}"#.len();

/// The body of `POST /api/v1/apps/batch`, borrowing the chunk's apps.
#[derive(Serialize)]
struct Body<'a> {
    apps: &'a [Value],
}

/// Its answer.
#[derive(Deserialize)]
struct Answer {
    results: Vec<BatchResult>,
}

/// Runs `alohactl submit-batch`.
pub fn run(
    client: &Client,
    format: Output,
    args: &SubmitBatchArgs,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    submit_batch(client, format, args, &mut std::io::stdin(), io)
}

fn submit_batch(
    client: &Client,
    format: Output,
    args: &SubmitBatchArgs,
    stdin: &mut dyn Read,
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    let text = read_input("the batch file", &args.file, stdin)?;
    let source = if args.file.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        args.file.display().to_string()
    };
    let apps = parse_submissions(&source, &text)?;
    // Clap keeps it within 1..=1000.
    let chunk = args.chunk as usize;
    check_request_sizes(&source, &apps, chunk)?;
    let base = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => fresh_idempotency_key()?,
    };
    check_key_length(&base, apps.len(), chunk)?;

    let chunks = apps.len().div_ceil(chunk);
    let mut raw: Vec<Value> = Vec::with_capacity(apps.len());
    let mut results: Vec<BatchResult> = Vec::with_capacity(apps.len());
    for (j, these) in apps.chunks(chunk).enumerate() {
        let answer = client
            .post_idempotent(
                "/api/v1/apps/batch",
                &Body { apps: these },
                &chunk_key(&base, j),
            )
            .and_then(|served| one_result_per_app(served, these.len()));
        match answer {
            Ok((served, decoded)) => {
                raw.extend(served);
                results.extend(decoded);
            }
            Err(e) => {
                if !results.is_empty() {
                    show(format, &raw, &results, &apps, io)?;
                }
                let accepted = results.iter().filter(|r| r.accepted()).count();
                return Err(chunk_failed(
                    e,
                    ChunkFailure {
                        number: j,
                        chunks,
                        first: j * chunk,
                        last: j * chunk + these.len() - 1,
                        accepted,
                        sent: results.len(),
                        base: &base,
                        chunk,
                    },
                ));
            }
        }
    }
    show(format, &raw, &results, &apps, io)?;
    match results.iter().filter(|r| !r.accepted()).count() {
        0 => Ok(()),
        refused => Err(CtlError::Refused {
            refused,
            total: apps.len(),
        }),
    }
}

/// The key of chunk `j`.
fn chunk_key(base: &str, j: usize) -> String {
    format!("{base}.{j}")
}

/// The results of one chunk, as served and decoded; an answer with another count of results
/// than apps sent cannot be matched to the apps.
fn one_result_per_app(
    answer: Served<Answer>,
    sent: usize,
) -> Result<(Vec<Value>, Vec<BatchResult>), CtlError> {
    let decoded = answer.data.results;
    match answer.raw {
        Value::Object(mut body) => match body.remove("results") {
            Some(Value::Array(served)) if served.len() == sent && decoded.len() == sent => {
                Ok((served, decoded))
            }
            _ => Err(CtlError::Internal(format!(
                "the master answered {} results for {sent} apps",
                decoded.len()
            ))),
        },
        // Decoded as an `Answer`, so it is an object.
        _ => Err(CtlError::Internal(
            "the master's answer is not an object".into(),
        )),
    }
}

/// Prints the results so far: a table, or `{"results": [...]}` as served.
fn show(
    format: Output,
    raw: &[Value],
    results: &[BatchResult],
    apps: &[Value],
    io: &mut Io<'_>,
) -> Result<(), CtlError> {
    print(
        io,
        &match format {
            Output::Table => output::batch_results(results, apps),
            Output::Json => output::json(&serde_json::json!({ "results": raw })),
        },
    )
}

/// Where and after what a chunk failed as a whole.
struct ChunkFailure<'a> {
    /// Its number, from 0.
    number: usize,
    chunks: usize,
    /// Its first and last app's index in the file.
    first: usize,
    last: usize,
    /// Apps of the earlier chunks accepted, and sent.
    accepted: usize,
    sent: usize,
    /// The base of the keys and the chunk size: how to run the command again safely.
    base: &'a str,
    chunk: usize,
}

/// The error of a chunk that failed as a whole: where, how far the batch got, and how to
/// finish it without creating an app twice.
fn chunk_failed(e: CtlError, at: ChunkFailure<'_>) -> CtlError {
    let e = match e {
        // Its hint names the chunk's key, which `submit-batch --idempotency-key` would extend:
        // the hint below names the base instead.
        CtlError::Uncertain {
            method, url, cause, ..
        } => CtlError::Uncertain {
            method,
            url,
            cause,
            idempotency_key: None,
        },
        other => other,
    };
    let before = match (at.sent, at.accepted) {
        (0, _) => "no app was sent before it".to_string(),
        (1, 1) => "the app before it was accepted".to_string(),
        (1, _) => "the app before it was refused".to_string(),
        (sent, accepted) if accepted == sent => format!("all {sent} apps before it were accepted"),
        (sent, accepted) => format!("{accepted} of the {sent} apps before it were accepted"),
    };
    CtlError::BatchStopped(format!(
        "chunk {} of {} (apps {} to {}) failed: {e}; {before}; running the command again with \
         the same file, --idempotency-key {} and --chunk {} is safe",
        at.number + 1,
        at.chunks,
        at.first,
        at.last,
        at.base,
        at.chunk
    ))
}

/// The submissions in `text`, read from `source` (a file name or `stdin`): `{"apps": [...]}`,
/// a JSON array, or JSON lines (one object per non-empty line; a single object, even spread
/// over several lines, is one submission). Each must be a JSON object; there must be one.
pub fn parse_submissions(source: &str, text: &str) -> Result<Vec<Value>, CtlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let apps = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(apps)) => objects(source, apps, |i| format!("element {i}"))?,
        Ok(Value::Object(mut wrapper)) if wrapper.contains_key("apps") => {
            if let Some(other) = wrapper.keys().find(|k| *k != "apps") {
                return Err(CtlError::Usage(format!(
                    "{source}: an object with \"apps\" must have no other field (found {other:?})"
                )));
            }
            match wrapper.remove("apps") {
                Some(Value::Array(apps)) => objects(source, apps, |i| format!("apps[{i}]"))?,
                _ => {
                    return Err(CtlError::Usage(format!(
                        "{source}: \"apps\" must be an array of submissions"
                    )))
                }
            }
        }
        Ok(one @ Value::Object(_)) => vec![one],
        Ok(_) => {
            return Err(CtlError::Usage(format!(
                "{source} must hold submissions: {{\"apps\": [...]}}, a JSON array or one JSON \
                 object per line"
            )))
        }
        Err(_) if text.trim().is_empty() => Vec::new(),
        // More than one value, the first on a line of its own: JSON lines.
        Err(_) if first_line_is_json(text) => json_lines(source, text)?,
        Err(e) => {
            return Err(CtlError::Usage(format!("{source} is not valid JSON: {e}")));
        }
    };
    if apps.is_empty() {
        return Err(CtlError::Usage(format!("{source} holds no apps to submit")));
    }
    Ok(apps)
}

fn first_line_is_json(text: &str) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| serde_json::from_str::<Value>(l).is_ok())
}

/// Every non-empty line, each a JSON object.
fn json_lines(source: &str, text: &str) -> Result<Vec<Value>, CtlError> {
    let mut apps = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(app @ Value::Object(_)) => apps.push(app),
            Ok(_) => {
                return Err(CtlError::Usage(format!(
                    "{source} line {} is not a JSON object (one submission per line)",
                    n + 1
                )))
            }
            Err(e) => {
                // The position within the line: the file's line is given already.
                let full = e.to_string();
                let at = format!(" at line {} column {}", e.line(), e.column());
                let reason = full.strip_suffix(&at).unwrap_or(&full);
                return Err(CtlError::Usage(format!(
                    "{source} line {} is not valid JSON: {reason} at column {}",
                    n + 1,
                    e.column()
                )));
            }
        }
    }
    Ok(apps)
}

/// `apps`, each checked to be a JSON object; `name` names element `i` in errors.
fn objects(
    source: &str,
    apps: Vec<Value>,
    name: impl Fn(usize) -> String,
) -> Result<Vec<Value>, CtlError> {
    match apps.iter().position(|a| !a.is_object()) {
        Some(i) => Err(CtlError::Usage(format!(
            "{source}: {} is not a JSON object (a submission)",
            name(i)
        ))),
        None => Ok(apps),
    }
}

/// Refuses, before anything is sent, a chunk the master would refuse as too large (413) after
/// the earlier chunks were accepted.
fn check_request_sizes(source: &str, apps: &[Value], chunk: usize) -> Result<(), CtlError> {
    // As sent: compact JSON.
    let sizes: Vec<usize> = apps.iter().map(|a| a.to_string().len()).collect();
    for (j, these) in sizes.chunks(chunk).enumerate() {
        let bytes = ENVELOPE_BYTES + these.iter().sum::<usize>() + these.len() - 1;
        if bytes <= MAX_REQUEST_BYTES {
            continue;
        }
        let (largest_at, largest) = sizes
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|(_, size)| *size)
            .unwrap_or_default();
        // n apps of at most `largest` bytes fit when ENVELOPE + n * largest + (n - 1) <= MAX.
        let fits = (MAX_REQUEST_BYTES + 1 - ENVELOPE_BYTES) / (largest + 1);
        return Err(CtlError::Usage(if fits == 0 {
            format!(
                "{source}: app {largest_at} is {largest} bytes of JSON, more than a request to \
                 the master may hold (1 MiB)"
            )
        } else {
            format!(
                "{source}: chunk {} (apps {} to {}) would be a request of {bytes} bytes, more \
                 than the master takes (1 MiB); use --chunk {} or less",
                j + 1,
                j * chunk,
                j * chunk + these.len() - 1,
                fits.min(chunk - 1)
            )
        }));
    }
    Ok(())
}

/// Refuses a base key whose longest app key, `<base>.<j>#<i>`, would be too long for the
/// master, before anything is sent: the keys grow with the chunk number.
fn check_key_length(base: &str, apps: usize, chunk: usize) -> Result<(), CtlError> {
    let longest = (0..apps.div_ceil(chunk))
        .map(|j| {
            let last_index = chunk.min(apps - j * chunk) - 1;
            chunk_key(base, j).len() + 1 + last_index.to_string().len()
        })
        .max()
        .unwrap_or(0);
    if longest > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(CtlError::Usage(format!(
            "--idempotency-key is too long for this batch: the key of its last app, \
             `KEY.<chunk>#<index>`, would be {longest} characters, more than the \
             {MAX_IDEMPOTENCY_KEY_LEN} the master takes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::client::tests::{client, Seen, TestServer};
    use clap::Parser;
    use serde_json::json;
    use std::time::Duration;

    fn parse(text: &str) -> Result<Vec<Value>, String> {
        parse_submissions("apps.json", text).map_err(|e| {
            assert!(matches!(e, CtlError::Usage(_)), "{e:?}");
            e.to_string()
        })
    }

    fn app(name: &str) -> Value {
        json!({"name": name, "kind": "process", "spec": {"command": ["true"]}})
    }

    #[test]
    fn the_three_formats_give_the_same_submissions() {
        let expected = vec![app("a"), json!({"name": "b", "kind": "nope"}), app("c")];
        let wrapper = serde_json::to_string_pretty(&json!({ "apps": expected })).unwrap();
        let array = serde_json::to_string_pretty(&expected).unwrap();
        let lines = format!(
            "\u{feff}{}\r\n\n  \n{}\n{}",
            expected[0], expected[1], expected[2]
        );
        for text in [&wrapper, &array, &lines] {
            assert_eq!(parse(text).unwrap(), expected, "{text}");
        }
        // One object, on one line or several, is one submission.
        assert_eq!(parse(&app("a").to_string()).unwrap(), [app("a")]);
        let pretty = serde_json::to_string_pretty(&app("a")).unwrap();
        assert_eq!(parse(&pretty).unwrap(), [app("a")]);
        // Sent as they are: unknown fields and all (the master judges them).
        let odd = json!({"name": "x", "corez": 2});
        assert_eq!(parse(&format!("{odd}\n{odd}")).unwrap(), [odd.clone(), odd]);
    }

    #[test]
    fn empty_input_is_refused() {
        for text in ["", " \n\n", "[]", r#"{"apps": []}"#, "\u{feff}"] {
            assert_eq!(
                parse(text).unwrap_err(),
                "apps.json holds no apps to submit",
                "{text:?}"
            );
        }
    }

    #[test]
    fn bad_json_names_the_line_or_element() {
        let text = format!("{}\n\n{{\"name\": \"b\",\n{}", app("a"), app("c"));
        assert_eq!(
            parse(&text).unwrap_err(),
            "apps.json line 3 is not valid JSON: EOF while parsing a value at column 13"
        );
        let text = format!("{}\n[1]\n", app("a"));
        assert_eq!(
            parse(&text).unwrap_err(),
            "apps.json line 2 is not a JSON object (one submission per line)"
        );
        assert_eq!(
            parse(r#"[{"name": "a"}, 3]"#).unwrap_err(),
            "apps.json: element 1 is not a JSON object (a submission)"
        );
        assert_eq!(
            parse(r#"{"apps": [{}, {}, "x"]}"#).unwrap_err(),
            "apps.json: apps[2] is not a JSON object (a submission)"
        );
        assert_eq!(
            parse(r#"{"apps": {"name": "a"}}"#).unwrap_err(),
            "apps.json: \"apps\" must be an array of submissions"
        );
        assert_eq!(
            parse(r#"{"apps": [], "chunk": 2}"#).unwrap_err(),
            "apps.json: an object with \"apps\" must have no other field (found \"chunk\")"
        );
        assert!(parse("42")
            .unwrap_err()
            .starts_with("apps.json must hold submissions"));
        // A pretty-printed file broken deep inside: the position in the file.
        let err = parse("{\n  \"apps\": [\n    {\"name\": \"a\"},\n    {\"name\": }\n  ]\n}")
            .unwrap_err();
        assert_eq!(
            err,
            "apps.json is not valid JSON: expected value at line 4 column 14"
        );
        let err = parse("[\n  {\"name\": \"a\"}\n  {\"name\": \"b\"}\n]").unwrap_err();
        assert!(
            err.starts_with("apps.json is not valid JSON: ") && err.ends_with("line 3 column 3"),
            "{err}"
        );
        assert!(parse("nope")
            .unwrap_err()
            .starts_with("apps.json is not valid JSON: "));
    }

    #[test]
    fn requests_over_the_masters_limit_are_refused_before_sending() {
        let padded = |n: usize| json!({"name": "x".repeat(n)});
        // Three apps of ~400 KiB: two fit in one request, three do not.
        let apps = vec![padded(400 << 10), padded(400 << 10), padded(400 << 10)];
        check_request_sizes("f", &apps, 2).unwrap();
        let err = check_request_sizes("f", &apps, 3).unwrap_err();
        assert!(matches!(err, CtlError::Usage(_)));
        assert!(
            err.to_string()
                .starts_with("f: chunk 1 (apps 0 to 2) would be a request of ")
                && err.to_string().ends_with("use --chunk 2 or less"),
            "{err}"
        );
        let err = check_request_sizes("f", &[app("a"), padded(1 << 20)], 1).unwrap_err();
        assert!(err.to_string().starts_with("f: app 1 is "), "{err}");
        // The limit is exact: a body of MAX_REQUEST_BYTES passes.
        let name = MAX_REQUEST_BYTES - ENVELOPE_BYTES - r#"{"name":""}"#.len();
        check_request_sizes("f", &[padded(name)], 1).unwrap();
        assert!(check_request_sizes("f", &[padded(name + 1)], 1).is_err());
    }

    #[test]
    fn keys_must_fit_the_master_with_the_chunk_and_index() {
        let key = |n: usize| "k".repeat(n);
        // 2500 apps in chunks of 1000: the longest is `KEY.2#499` (the last chunk is short),
        // and `KEY.1#999` is as long.
        check_key_length(&key(MAX_IDEMPOTENCY_KEY_LEN - 6), 2500, 1000).unwrap();
        let err = check_key_length(&key(MAX_IDEMPOTENCY_KEY_LEN - 5), 2500, 1000).unwrap_err();
        assert!(matches!(err, CtlError::Usage(_)));
        assert!(err.to_string().contains("would be 256 characters"), "{err}");
        // One app, one chunk: `KEY.0#0`.
        check_key_length(&key(MAX_IDEMPOTENCY_KEY_LEN - 4), 1, 1000).unwrap();
        assert!(check_key_length(&key(MAX_IDEMPOTENCY_KEY_LEN - 3), 1, 1000).is_err());
    }

    fn batch_args(args: &[&str]) -> SubmitBatchArgs {
        let all = ["alohactl", "submit-batch"]
            .into_iter()
            .chain(args.iter().copied());
        match Cli::try_parse_from(all).unwrap().command {
            Command::SubmitBatch(a) => a,
            other => panic!("{other:?}"),
        }
    }

    /// Runs `alohactl submit-batch - <args>` with `input` on stdin; returns the result, stdout.
    fn run_batch(
        c: &Client,
        format: Output,
        args: &[&str],
        input: &str,
    ) -> (Result<(), CtlError>, String) {
        let mut all = vec!["-"];
        all.extend_from_slice(args);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = submit_batch(
            c,
            format,
            &batch_args(&all),
            &mut input.as_bytes(),
            &mut Io {
                out: &mut out,
                err: &mut err,
            },
        );
        (result, String::from_utf8(out).unwrap())
    }

    /// A master that accepts every app named `ok*` (201, with an id from its index in the whole
    /// batch, the number after `ok`) and refuses the others (422).
    fn judge(seen: &Seen) -> (u16, String) {
        let body: Value = serde_json::from_str(&seen.body).unwrap();
        let results: Vec<Value> = body["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let name = a["name"].as_str().unwrap();
                match name.strip_prefix("ok") {
                    Some(n) => {
                        json!({"status": 201, "app": {"id": format!("app-{n}"), "name": name}})
                    }
                    None => json!({"status": 422, "error": format!("unknown kind {}", a["kind"])}),
                }
            })
            .collect();
        (200, json!({ "results": results }).to_string())
    }

    fn lines(names: &[&str]) -> String {
        names.iter().map(|n| app(n).to_string() + "\n").collect()
    }

    #[test]
    fn chunks_are_sent_in_order_each_with_its_key() {
        let server = TestServer::start(judge);
        let c = client(&[&server.url], Duration::from_secs(5));
        let input = lines(&["ok0", "ok1", "ok2"]);
        let args = ["--chunk", "2", "--idempotency-key", "nightly"];
        let (result, out) = run_batch(&c, Output::Json, &args, &input);
        result.unwrap();
        let printed: Value = serde_json::from_str(&out).unwrap();
        let ids: Vec<&str> = printed["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["app"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["app-0", "app-1", "app-2"], "{out}");

        let seen = server.seen();
        let sent: Vec<(&str, &str, Option<&str>)> = seen
            .iter()
            .map(|s| {
                (
                    s.method.as_str(),
                    s.target.as_str(),
                    s.header("idempotency-key"),
                )
            })
            .collect();
        assert_eq!(
            sent,
            [
                ("POST", "/api/v1/apps/batch", Some("nightly.0")),
                ("POST", "/api/v1/apps/batch", Some("nightly.1")),
            ]
        );
        let body = |i: usize| serde_json::from_str::<Value>(&seen[i].body).unwrap();
        assert_eq!(body(0), json!({"apps": [app("ok0"), app("ok1")]}));
        assert_eq!(body(1), json!({"apps": [app("ok2")]}));

        // Without a key: one fresh base per invocation, `.j` per chunk.
        for _ in 0..2 {
            run_batch(&c, Output::Table, &["--chunk", "2"], &input)
                .0
                .unwrap();
        }
        let keys: Vec<String> = server.seen()[2..]
            .iter()
            .map(|s| s.header("idempotency-key").unwrap().to_string())
            .collect();
        let (first, second) = (&keys[0][..32], &keys[2][..32]);
        assert_eq!(
            keys,
            [
                first.to_string() + ".0",
                first.to_string() + ".1",
                second.to_string() + ".0",
                second.to_string() + ".1"
            ]
        );
        assert_ne!(first, second, "every invocation needs fresh keys");
    }

    #[test]
    fn refused_apps_are_shown_and_make_the_exit_status() {
        let server = TestServer::start(judge);
        let c = client(&[&server.url], Duration::from_secs(5));
        let input = lines(&["ok0", "bad", "ok2", "worse"]);
        let (result, out) = run_batch(&c, Output::Table, &["--chunk", "3"], &input);
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), "2 of 4 apps were refused");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(1));
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0], ["INDEX", "STATUS", "APP", "NAME", "ERROR"]);
        assert_eq!(rows[1], ["0", "201", "app-0", "ok0"]);
        assert_eq!(rows[2][..4], ["1", "422", "-", "bad"]);
        assert_eq!(rows[3], ["2", "201", "app-2", "ok2"]);
        assert_eq!(rows[4][..4], ["3", "422", "-", "worse"], "{out}");

        let (result, out) = run_batch(&c, Output::Json, &["--chunk", "3"], &input);
        assert!(result.is_err());
        let printed: Value = serde_json::from_str(&out).unwrap();
        let statuses: Vec<u64> = printed["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [201, 422, 201, 422]);
    }

    #[test]
    fn a_failed_chunk_stops_after_printing_the_earlier_ones() {
        // The second chunk fails as a whole, on every master.
        let server = TestServer::start(|seen| {
            if seen
                .header("idempotency-key")
                .is_some_and(|k| k.ends_with(".1"))
            {
                return (503, r#"{"error":"the store failed"}"#.to_string());
            }
            judge(seen)
        });
        let c = client(&[&server.url], Duration::from_secs(5));
        let input = lines(&["ok0", "bad", "ok2", "ok3", "ok4"]);
        let args = ["--chunk", "2", "--idempotency-key", "k"];
        let (result, out) = run_batch(&c, Output::Json, &args, &input);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            "chunk 2 of 3 (apps 2 to 3) failed: the store failed (HTTP 503 Service Unavailable); \
             1 of the 2 apps before it were accepted; running the command again with the same \
             file, --idempotency-key k and --chunk 2 is safe"
        );
        let printed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(printed["results"].as_array().unwrap().len(), 2, "{out}");
        assert_eq!(
            server.seen().len(),
            2,
            "nothing is sent after the failed chunk"
        );

        // The first chunk: nothing printed, and the fresh base key is named.
        let failing = TestServer::start(|_| (422, r#"{"error":"apps[0].cores: bad"}"#.into()));
        let c = client(&[&failing.url], Duration::from_secs(5));
        let (result, out) = run_batch(&c, Output::Table, &[], &lines(&["ok0"]));
        let err = result.unwrap_err().to_string();
        let key = failing.seen()[0]
            .header("idempotency-key")
            .unwrap()
            .to_string();
        let base = key.strip_suffix(".0").unwrap();
        assert_eq!(
            err,
            format!(
                "chunk 1 of 1 (apps 0 to 0) failed: apps[0].cores: bad (HTTP 422 Unprocessable \
                 Entity); no app was sent before it; running the command again with the same \
                 file, --idempotency-key {base} and --chunk 1000 is safe"
            )
        );
        assert_eq!(out, "");
    }

    #[test]
    fn an_answer_that_does_not_match_the_apps_is_an_error() {
        let server = TestServer::start(|_| (200, r#"{"results":[]}"#.into()));
        let c = client(&[&server.url], Duration::from_secs(5));
        let (result, _) = run_batch(&c, Output::Json, &[], &lines(&["ok0"]));
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with(
                "chunk 1 of 1 (apps 0 to 0) failed: the master answered 0 results for 1 apps;"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_flags() {
        let a = batch_args(&["apps.jsonl"]);
        assert_eq!((a.chunk, a.idempotency_key), (1000, None));
        let a = batch_args(&["-", "--chunk", "1", "--idempotency-key", "k"]);
        assert_eq!((a.chunk, a.idempotency_key.as_deref()), (1, Some("k")));
        let all = |args: &[&str]| {
            Cli::try_parse_from(["alohactl", "submit-batch"].iter().chain(args)).map(|_| ())
        };
        for bad in [
            &["f", "--chunk", "0"][..],
            &["f", "--chunk", "1001"],
            &[],
            &["f", "--idempotency-key", "a b"],
        ] {
            assert!(all(bad).is_err(), "{bad:?}");
        }
    }
}
