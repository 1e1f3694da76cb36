//! The local S3 endpoint (moto, started with scripts/s3-local.sh) for the object-store
//! tests: its address, buckets, and the environment that points Sluice at it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;

use super::repo;

/// The local S3 endpoint, started once.
pub fn endpoint() -> String {
    static EP: OnceLock<String> = OnceLock::new();
    EP.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/s3-local.sh"))
            .arg("start")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "could not start the local S3 endpoint:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "http://127.0.0.1:{}",
            std::env::var("S3_PORT").unwrap_or_else(|_| "9787".into())
        )
    })
    .clone()
}

/// Creates `bucket` on the endpoint (a bare HTTP PUT).
pub fn create_bucket(endpoint: &str, bucket: &str) {
    let host = endpoint.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    write!(
        s,
        "PUT /{bucket} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

/// The `AWS_*` variables that point a client at the endpoint.
pub fn s3_env(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true");
}
