//! Long-lived RPC streams and graceful shutdown.
//!
//! A tonic server's graceful shutdown waits for every open call to end. The streams a master
//! and a worker keep open to each other (`LaunchApps`, `StreamAppStates`) only end when the
//! other side closes them, so the side that stops ends its answers itself.

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};

/// `stream`'s items until it ends or `stop` turns true, whichever comes first.
pub fn until_stopped<S>(
    stream: S,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    // `None` marks the end: of `stream`, or the stop.
    let stopped = WatchStream::new(stop).filter_map(|stop| stop.then_some(None));
    let items = stream.map(Some).chain(tokio_stream::once(None));
    items
        .merge(stopped)
        .take_while(Option::is_some)
        .filter_map(|item| item)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn ends_with_its_stream() {
        let (_stop, rx) = watch::channel(false);
        let items: Vec<u32> = until_stopped(tokio_stream::iter([1, 2, 3]), rx)
            .collect()
            .await;
        assert_eq!(items, [1, 2, 3]);
    }

    #[tokio::test]
    async fn ends_when_stopped_though_its_stream_goes_on() {
        let (stop, rx) = watch::channel(false);
        let (tx, items) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut s = Box::pin(until_stopped(
            tokio_stream::wrappers::UnboundedReceiverStream::new(items),
            rx,
        ));
        tx.send(1).unwrap();
        assert_eq!(s.next().await, Some(1));
        stop.send(true).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        assert_eq!(end, Ok(None), "the stream ends at the stop");
        drop(tx);
    }

    #[tokio::test]
    async fn a_stop_already_given_ends_it_at_once() {
        let (_stop, rx) = watch::channel(true);
        let (_tx, items) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let s = until_stopped(
            tokio_stream::wrappers::UnboundedReceiverStream::new(items),
            rx,
        );
        let all = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>()).await;
        assert_eq!(all, Ok(vec![]));
    }
}
