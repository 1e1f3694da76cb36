//! Where checkpoints and file sinks keep their files: a local directory, or an object
//! store URL (`s3://bucket/prefix`, credentials and endpoint from the usual `AWS_*`
//! environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`). Everything above this module sees one
//! `ObjectStore` rooted at the location.

use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

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
        let s3 = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| err(&e))?;
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
