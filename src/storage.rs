//! Where checkpoints and file sinks keep their files: a local directory, or an object
//! store URL (`s3://bucket/prefix`, credentials and endpoint from the usual `AWS_*`
//! environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`). Everything above this module sees one
//! `ObjectStore` rooted at the location.

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use crate::error::{Error, Result};

/// An object store rooted at `location` (created when it is a missing local directory).
pub fn open(location: &str, what: &str) -> Result<Arc<dyn ObjectStore>> {
    let err =
        |e: &dyn std::fmt::Display| Error::option(format!("{what} {location}"), e.to_string());
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(err(&"an s3:// location needs a bucket: s3://bucket/prefix"));
        }
        // Requests fail within seconds (object_store's defaults retry one for up to 3
        // minutes with no word): `put_retrying` retries writes, and says so.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..RetryConfig::default()
            });
        for (var, key, value) in [
            ("AWS_TIMEOUT", ClientConfigKey::Timeout, "10s"),
            ("AWS_CONNECT_TIMEOUT", ClientConfigKey::ConnectTimeout, "5s"),
        ] {
            if std::env::var_os(var).is_none() {
                builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
            }
        }
        let s3 = builder.build().map_err(|e| err(&e))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        });
    }
    if location.contains("://") && !location.starts_with("file://") {
        return Err(err(
            &"unsupported URL scheme; use a local directory, file://DIR or s3://bucket/prefix",
        ));
    }
    let dir = location.trim_start_matches("file://");
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create the directory", dir, e))?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| err(&e))?;
    Ok(Arc::new(store))
}

/// How long a failing write is retried before the run stops, in ms (`--write-retry`;
/// one setting for the process, as a run is one query).
static RETRY_FOR_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60_000);

/// Sets how long [`put_retrying`] retries a failing write.
pub fn set_retry_for(d: Duration) {
    RETRY_FOR_MS.store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// How long a failing write is retried: `--write-retry`, 60 s unless set.
pub fn retry_for() -> Duration {
    Duration::from_millis(RETRY_FOR_MS.load(std::sync::atomic::Ordering::Relaxed))
}

/// The retry schedule of a failing write: waits of 0.5 s doubling to 8 s, for up to
/// `--write-retry` from when it was made. Checkpoint and file-sink puts and the Kafka
/// sink's transactions follow it.
pub struct Backoff {
    since: Instant,
    wait: Duration,
}

impl Backoff {
    /// A schedule whose `--write-retry` window starts now.
    pub fn start() -> Self {
        Self {
            since: Instant::now(),
            wait: Duration::from_millis(500),
        }
    }

    /// The wait before the next try, or `None` once that try would come after the
    /// window.
    pub fn next_wait(&mut self) -> Option<Duration> {
        if self.since.elapsed() + self.wait > retry_for() {
            return None;
        }
        let wait = self.wait;
        self.wait = (wait * 2).min(Duration::from_secs(8));
        Some(wait)
    }

    /// Time since the window started.
    pub fn elapsed(&self) -> Duration {
        self.since.elapsed()
    }
}

/// `store.put(path, payload)`, retried on the [`Backoff`] schedule (0.5 s, doubling to
/// 8 s, for up to `--write-retry`, 60 s by default) while it fails: a full or read-only
/// disk that is mended, an object store that times out or is restarted. Each retry is a
/// warning that names the error. A put is atomic (a local file is written aside and
/// renamed; an object appears only whole), so a failed try leaves nothing half-written
/// under `path`. The last error, with how long it was retried, when it never succeeds.
pub async fn put_retrying(
    store: &dyn ObjectStore,
    path: &Path,
    payload: PutPayload,
) -> std::result::Result<(), String> {
    retrying(&format!("writing {path}"), || {
        store.put(path, payload.clone())
    })
    .await
    .map(|_| ())
}

/// `store.delete(path)`, retried as [`put_retrying`] is. A file already gone counts as
/// deleted (a try whose answer was lost, or a replay after a crash).
pub async fn delete_retrying(
    store: &dyn ObjectStore,
    path: &Path,
) -> std::result::Result<(), String> {
    retrying(&format!("deleting {path}"), || async {
        match store.delete(path).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            r => r,
        }
    })
    .await
}

/// `op` (the store call `what` names) retried on the [`Backoff`] schedule while it
/// fails, with a warning each time; the last error, with how long it was retried.
async fn retrying<T, F, Fut>(what: &str, mut op: F) -> std::result::Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = object_store::Result<T>>,
{
    let mut backoff = Backoff::start();
    let mut tries = 0;
    loop {
        tries += 1;
        let e = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(wait) = backoff.next_wait() else {
            return Err(format!(
                "{what} failed {tries} times in {:.0} s: {e}; mend the store (space, permissions, endpoint) and run again: it resumes after the last committed batch",
                backoff.elapsed().as_secs_f64()
            ));
        };
        tracing::warn!(
            "{what} failed ({e}); retrying in {:.1} s (for up to {:.0} s, then the run stops; the batch is not committed until it succeeds)",
            wait.as_secs_f64(),
            retry_for().as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_delete_removes_the_file_and_a_file_already_gone_counts_as_deleted() {
        let dir = std::env::temp_dir().join(format!("sluice-delete-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = LocalFileSystem::new_with_prefix(&dir).unwrap();
        let path = Path::from("part-1.jsonl");
        put_retrying(&store, &path, PutPayload::from_static(b"{}\n"))
            .await
            .unwrap();
        assert!(dir.join("part-1.jsonl").exists());
        delete_retrying(&store, &path).await.unwrap();
        assert!(!dir.join("part-1.jsonl").exists());
        // Again: the try whose answer was lost, or a replay, finds it gone.
        delete_retrying(&store, &path).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
