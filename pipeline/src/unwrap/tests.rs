use std::io::Write;
use std::process::{Command, Stdio};

use super::*;
use crate::source::{ChunkSource, MemorySource, SourceError};

const ALL: [Wrapper; 4] = [Wrapper::Bzip2, Wrapper::Gzip, Wrapper::Xz, Wrapper::Zstd];

/// The command-line compressor of `wrapper` (installed by `scripts/setup --test`).
fn tool(wrapper: Wrapper) -> &'static str {
    match wrapper {
        Wrapper::Bzip2 => "bzip2",
        Wrapper::Gzip => "gzip",
        Wrapper::Xz => "xz",
        Wrapper::Zstd => "zstd",
    }
}

/// `data` compressed by the real tool.
fn compress(wrapper: Wrapper, data: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool(wrapper))
        .args(["-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// An image-like payload: a text-ish head, pseudo-random data, zeros.
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v: Vec<u8> = b"not a disk image, just bytes ".repeat(64);
    while v.len() < len / 2 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x >> 24) as u8);
    }
    v.resize(len, 0);
    v
}

/// Everything `Unwrapped` yields over `data` served in `chunk`-byte chunks, and its wrapper.
async fn unwrap_all(
    data: Vec<u8>,
    chunk: usize,
    limit: u64,
) -> (Result<Vec<u8>, SourceError>, Option<Wrapper>) {
    let mut src = Unwrapped::open(
        MemorySource::new(Bytes::from(data), chunk),
        UnwrapLimits::capped(limit),
    )
    .await
    .unwrap();
    let wrapper = src.wrapper();
    let mut out = Vec::new();
    loop {
        match src.next_chunk().await {
            Ok(Some(c)) => {
                assert!(c.len() <= OUTPUT_CHUNK);
                out.extend_from_slice(&c);
            }
            Ok(None) => return (Ok(out), wrapper),
            Err(e) => return (Err(e), wrapper),
        }
    }
}

fn unwrap_err(r: Result<Vec<u8>, SourceError>) -> UnwrapError {
    match r {
        Err(SourceError::Unwrap(e)) => e,
        other => panic!("expected an unwrap error, got {other:?}"),
    }
}

#[test]
fn test_detect_each_tool_output_is_its_wrapper() {
    for w in ALL {
        assert_eq!(detect(&compress(w, b"x")), Some(w), "{w}");
    }
    assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), None);
    assert_eq!(detect(b"BZh9"), None, "bzip2 needs its block magic");
}

#[tokio::test]
async fn test_unwrapped_each_wrapper_yields_the_original_bytes() {
    // Byte by byte over a small image, in odd and large chunks over one of several pieces.
    for (len, chunk) in [(20_000, 1), (3 << 20, 4093), (3 << 20, 1 << 20)] {
        let data = payload(len);
        for w in ALL {
            let (out, wrapper) = unwrap_all(compress(w, &data), chunk, u64::MAX).await;
            assert_eq!(wrapper, Some(w));
            assert!(out.unwrap() == data, "{w} chunk {chunk}");
        }
    }
}

#[tokio::test]
async fn test_unwrapped_plain_stream_passes_through_with_its_length() {
    let data = payload(100_000);
    let src = Unwrapped::open(
        MemorySource::new(Bytes::from(data.clone()), 3),
        UnwrapLimits::capped(u64::MAX),
    )
    .await
    .unwrap();
    assert_eq!(src.wrapper(), None);
    assert_eq!(src.content_length(), Some(100_000));
    let (out, _) = unwrap_all(data.clone(), 3, u64::MAX).await;
    assert!(out.unwrap() == data);
    let (out, _) = unwrap_all(b"ab".to_vec(), 1, u64::MAX).await;
    assert_eq!(out.unwrap(), b"ab");
}

#[tokio::test]
async fn test_unwrapped_concatenated_streams_are_all_decompressed() {
    for w in ALL {
        let mut both = compress(w, b"first ");
        both.extend(compress(w, b"second"));
        let (out, _) = unwrap_all(both, 7, u64::MAX).await;
        assert_eq!(out.unwrap(), b"first second", "{w}");
    }
}

#[tokio::test]
async fn test_unwrapped_truncated_stream_is_corrupt_naming_the_wrapper() {
    let data = payload(1 << 20);
    for w in ALL {
        let whole = compress(w, &data);
        for cut in [whole.len() / 2, whole.len() - 1] {
            let (out, _) = unwrap_all(whole[..cut].to_vec(), 65536, u64::MAX).await;
            let e = unwrap_err(out);
            assert_eq!(e.reason_code(), "corrupt", "{w} cut at {cut}: {e}");
            assert!(e.to_string().starts_with(w.as_str()), "{e}");
        }
    }
}

#[tokio::test]
async fn test_unwrapped_corrupt_stream_is_corrupt_naming_the_wrapper() {
    let data = payload(1 << 20);
    for w in ALL {
        let mut bad = compress(w, &data);
        let mid = bad.len() / 3;
        for b in &mut bad[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let (out, _) = unwrap_all(bad, 65536, u64::MAX).await;
        let e = unwrap_err(out);
        assert_eq!(e.reason_code(), "corrupt", "{w}: {e}");
        assert!(e.to_string().starts_with(w.as_str()), "{e}");
    }
}

#[tokio::test]
async fn test_unwrapped_trailing_garbage_is_corrupt() {
    for w in ALL {
        let mut data = compress(w, b"image");
        data.extend_from_slice(b"garbage after the stream");
        let (out, _) = unwrap_all(data, 4096, u64::MAX).await;
        assert_eq!(unwrap_err(out).reason_code(), "corrupt", "{w}");
    }
}

#[tokio::test]
async fn test_unwrapped_bomb_stops_at_the_limit() {
    // 64 MiB of zeros compress to a few KiB; the limit is 1 MiB.
    let zeros = vec![0u8; 64 << 20];
    for w in [Wrapper::Gzip, Wrapper::Zstd, Wrapper::Xz] {
        let (out, _) = unwrap_all(compress(w, &zeros), 65536, 1 << 20).await;
        let e = unwrap_err(out);
        assert!(
            matches!(e, UnwrapError::TooLarge { limit, .. } if limit == 1 << 20),
            "{e}"
        );
        assert_eq!(e.reason_code(), "size_cap");
    }
}

#[tokio::test]
async fn test_unwrapped_nested_wrapper_is_refused_as_compressed() {
    let inner = compress(Wrapper::Xz, &payload(10_000));
    let (out, _) = unwrap_all(compress(Wrapper::Gzip, &inner), 4096, u64::MAX).await;
    let e = unwrap_err(out);
    assert!(
        matches!(
            e,
            UnwrapError::Nested {
                inner: Wrapper::Xz,
                outer: Wrapper::Gzip
            }
        ),
        "{e}"
    );
    assert_eq!(e.reason_code(), "compressed");
}

#[tokio::test]
async fn test_unwrapped_dropped_midway_stops_the_thread() {
    let data = payload(8 << 20);
    let mut src = Unwrapped::open(
        MemorySource::new(Bytes::from(compress(Wrapper::Zstd, &data)), 4096),
        UnwrapLimits::capped(u64::MAX),
    )
    .await
    .unwrap();
    assert!(src.next_chunk().await.unwrap().is_some());
    drop(src); // must not hang or panic: the thread's next send fails
}

#[test]
fn test_unwrap_reader_each_wrapper_yields_the_original_bytes() {
    let data = payload(1 << 20);
    for w in ALL {
        let compressed = compress(w, &data);
        let (mut r, found) =
            unwrap_reader(&compressed[..], &UnwrapLimits::capped(u64::MAX)).unwrap();
        assert_eq!(found, Some(w));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert!(out == data, "{w}");
    }
    let (mut r, found) = unwrap_reader(&b"plain"[..], &UnwrapLimits::capped(u64::MAX)).unwrap();
    assert_eq!(found, None);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"plain");
}

#[test]
fn test_unwrap_reader_truncated_is_an_unwrap_error_in_read_chunk() {
    let whole = compress(Wrapper::Gzip, &payload(1 << 20));
    let (mut r, _) =
        unwrap_reader(&whole[..whole.len() / 2], &UnwrapLimits::capped(u64::MAX)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let err = loop {
        match crate::source::read_chunk(&mut r, &mut buf, 0) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a truncated stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, SourceError::Unwrap(UnwrapError::Truncated { .. })),
        "{err:?}"
    );
}
