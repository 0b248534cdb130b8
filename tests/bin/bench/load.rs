//! Many submissions fast: `connections` tasks on one tokio runtime, each keeping its own
//! keep-alive connection busy, until `n` apps are acknowledged. Used to fill a queue (`queue`)
//! and to feed the simulated workers (`scale`), and to create schedules (`schedules`); what it
//! measures is the master, not itself.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::setup::app_body;

/// Submits `n` apps to the master at `base` from `connections` concurrent tasks; `done` counts
/// the acknowledged ones as they come. Fails at the first answer other than `201`.
pub(crate) async fn submit_many_async(
    base: &str,
    n: usize,
    connections: usize,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    let body = app_body("load").to_string();
    let url = format!("{base}/api/v1/apps");
    post_many_async(&url, n, connections, done, move |_| body.clone()).await
}

/// Submits `n` apps to the master at `base` in `POST /api/v1/apps/batch` requests of up to
/// `batch` apps each, from `connections` concurrent tasks; `done` counts the acknowledged apps
/// as they come. Fails at the first answer other than `200` with a `201` for every app.
pub(crate) async fn submit_batches_async(
    base: &str,
    n: usize,
    batch: usize,
    connections: usize,
    done: Arc<AtomicUsize>,
) -> Result<(), String> {
    let app = app_body("load");
    let url = format!("{base}/api/v1/apps/batch");
    let body = |k: usize| serde_json::json!({ "apps": vec![app.clone(); k] }).to_string();
    let (full, last) = (body(batch), body(n % batch));
    let posts = Posts {
        n,
        per_request: batch,
        connections,
        done,
    };
    posts
        .run(
            &url,
            move |_, k| {
                if k == batch {
                    full.clone()
                } else {
                    last.clone()
                }
            },
            |status, text, k| {
                let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
                let created = v["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|x| x["status"] == 201).count());
                if status == 200 && created == k {
                    Ok(())
                } else {
                    Err(format!("{status}, {created} of {k} created: {text}"))
                }
            },
        )
        .await
}

/// POSTs `n` JSON bodies (`body(i)` for the i-th) to `url` from `connections` concurrent tasks,
/// each on its own keep-alive connection; `done` counts the `201`s as they come. Fails at the
/// first other answer.
pub(crate) async fn post_many_async(
    url: &str,
    n: usize,
    connections: usize,
    done: Arc<AtomicUsize>,
    body: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Result<(), String> {
    let posts = Posts {
        n,
        per_request: 1,
        connections,
        done,
    };
    posts
        .run(
            url,
            move |i, _| body(i),
            |status, text, _| {
                if status == 201 {
                    Ok(())
                } else {
                    Err(format!("{status}: {text}"))
                }
            },
        )
        .await
}

/// `n` items POSTed `per_request` at a time from `connections` concurrent tasks, each on its
/// own keep-alive connection; `done` counts the accepted items as they come.
struct Posts {
    n: usize,
    per_request: usize,
    connections: usize,
    done: Arc<AtomicUsize>,
}

impl Posts {
    /// Sends `body(first, k)` for items `first..first + k`; `accepted(status, text, k)` tells
    /// whether the answer accepted all k. Fails at the first answer that did not.
    async fn run(
        self,
        url: &str,
        body: impl Fn(usize, usize) -> String + Send + Sync + 'static,
        accepted: impl Fn(u16, &str, usize) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<(), String> {
        let Posts {
            n,
            per_request,
            connections,
            done,
        } = self;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        let (body, accepted) = (Arc::new(body), Arc::new(accepted));
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections.max(1) {
            let (client, url, body, accepted, next, done) = (
                client.clone(),
                url.to_string(),
                body.clone(),
                accepted.clone(),
                next.clone(),
                done.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let first = next.fetch_add(per_request, Ordering::Relaxed);
                    if first >= n {
                        return Ok(());
                    }
                    let k = per_request.min(n - first);
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body(first, k))
                        .send()
                        .await
                        .map_err(|e| format!("POST {url}: {e}"))?;
                    let status = r.status().as_u16();
                    // Read the body so the connection is reused.
                    let text = r.text().await.map_err(|e| format!("POST {url}: {e}"))?;
                    accepted(status, &text, k).map_err(|e| format!("POST {url}: {e}"))?;
                    done.fetch_add(k, Ordering::Relaxed);
                }
            });
        }
        let mut first_err = None;
        while let Some(r) = tasks.join_next().await {
            let r = r
                .map_err(|e| format!("submission task: {e}"))
                .and_then(|r| r);
            if let (Err(e), None) = (r, &first_err) {
                // Stop the others: the run is failed.
                next.store(n, Ordering::Relaxed);
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// [`submit_many_async`] on a runtime of its own, printing progress to stderr every 10 s.
/// Returns the wall time.
pub(crate) fn submit_many(
    base: &str,
    n: usize,
    connections: usize,
    what: &str,
) -> Result<Duration, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio: {e}"))?;
    let done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    rt.block_on(async {
        let progress = {
            let (done, what) = (done.clone(), what.to_string());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let d = done.load(Ordering::Relaxed);
                    let rate = d as f64 / start.elapsed().as_secs_f64();
                    eprintln!("{what}: {d} of {n} submitted ({rate:.0}/s)");
                }
            })
        };
        let r = submit_many_async(base, n, connections, done.clone()).await;
        progress.abort();
        r
    })?;
    Ok(start.elapsed())
}
