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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let body = |k: usize| serde_json::json!({ "apps": vec![app.clone(); k] }).to_string();
    let (full, last) = (body(batch), body(n % batch));
    let bodies = Arc::new((full, last));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (client, url, bodies, next, done) = (
            client.clone(),
            url.clone(),
            bodies.clone(),
            next.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= n {
                    return Ok::<(), String>(());
                }
                let k = batch.min(n - first);
                let body = if k == batch { &bodies.0 } else { &bodies.1 };
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                let status = r.status();
                let text = r.text().await.map_err(|e| format!("POST {url}: {e}"))?;
                if status.as_u16() != 200 {
                    return Err(format!("POST {url}: {status}: {text}"));
                }
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("POST {url}: {e}"))?;
                let created = v["results"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|x| x["status"] == 201).count());
                if created != k {
                    return Err(format!("POST {url}: {created} of {k} created: {text}"));
                }
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
            next.store(n, Ordering::Relaxed);
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let body = Arc::new(body);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (client, url, body, next, done) = (
            client.clone(),
            url.to_string(),
            body.clone(),
            next.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body(i))
                    .send()
                    .await
                    .map_err(|e| format!("POST {url}: {e}"))?;
                let status = r.status();
                // Read the body so the connection is reused.
                let text = r.text().await.map_err(|e| format!("POST {url}: {e}"))?;
                if status.as_u16() != 201 {
                    return Err(format!("POST {url}: {status}: {text}"));
                }
                done.fetch_add(1, Ordering::Relaxed);
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
