//! End-to-end ingest throughput: serves FILE over loopback HTTP and ingests it into a
//! temporary store (inspect + md5 ∥ sha512 + write + fsync + rename).
//!
//! `cargo run --release -p sluice-pipeline --example ingest_bench -- FILE [STORE_DIR]`
//! Compare with `time (md5sum FILE & sha512sum FILE & wait)`.

use std::time::Instant;

use sluice_formats::{Format, Limits};
use sluice_pipeline::http::{HttpConfig, HttpSource};
use sluice_pipeline::ssrf::ImportPolicy;
use sluice_pipeline::store::{LocalStore, Store};
use sluice_pipeline::{ingest, Progress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let file = args.next().expect("usage: ingest_bench FILE [STORE_DIR]");
    let store_dir = args
        .next()
        .unwrap_or_else(|| "/tmp/sluice-bench-store".to_owned());
    let len = std::fs::metadata(&file).expect("stat FILE").len();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = file.clone();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = [0u8; 4096];
        let _ = sock.read(&mut req).await.unwrap();
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut f = tokio::fs::File::open(&served).await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.unwrap();
            if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    });
    let store = LocalStore::open(&store_dir).unwrap();
    let _ = store.delete("bench");
    let policy = ImportPolicy {
        allowed_hosts: vec![format!("127.0.0.1:{port}").parse().unwrap()],
        ..ImportPolicy::default()
    };
    let start = Instant::now();
    let source = HttpSource::open(
        &format!("http://127.0.0.1:{port}/x"),
        &policy,
        &HttpConfig::default(),
    )
    .await
    .unwrap();
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let done = ingest(
        source,
        Format::Raw,
        Limits::default(),
        &store,
        "bench",
        &Progress::default(),
        rx,
    )
    .await
    .unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{} bytes in {secs:.2} s = {:.0} MB/s  md5 {}  sha512 {}…",
        done.size,
        done.size as f64 / secs / 1e6,
        done.md5_hex,
        &done.sha512_hex[..16]
    );
    store.delete("bench").unwrap();
}
