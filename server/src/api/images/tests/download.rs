//! `GET /v2/images/{id}/file`.

use http::{Method, StatusCode};

use crate::api::body::FILE_CHUNK;
use crate::api::testing::{admin, image_record, uuid_n, Harness, ADMIN_PROJECT};

#[tokio::test]
async fn test_download_image_whole_and_ranges() {
    let h = Harness::new();
    // More than one chunk, and not a multiple of the chunk size.
    let data: Vec<u8> = (0..FILE_CHUNK * 2 + 7).map(|i| (i % 251) as u8).collect();
    let size = data.len() as u64;
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, ADMIN_PROJECT, "x", size, 1), Some(&data))
        .await;
    let path = format!("/v2/images/{id}/file");

    let whole = h.call(Method::GET, &path, b"").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body.as_ref(), &data[..]);
    assert_eq!(
        whole.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(whole.header("content-length"), Some(&*size.to_string()));
    assert_eq!(
        whole.header("content-md5"),
        Some("2b22e47a1241758b66841255ee675057")
    );

    let ranged = |range: &'static str| {
        let mut headers = admin();
        headers.push(("range", range));
        let path = path.clone();
        let h = &h;
        async move { h.call_as(Method::GET, &path, &headers, b"").await }
    };
    let part = ranged("bytes=2-5").await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body.as_ref(), &data[2..6]);
    assert_eq!(
        part.header("content-range"),
        Some(&*format!("bytes 2-5/{size}"))
    );
    assert_eq!(
        part.header("content-md5"),
        Some("2b22e47a1241758b66841255ee675057")
    );

    let tail = ranged("bytes=-3").await;
    assert_eq!(tail.body.as_ref(), &data[data.len() - 3..]);
    let from = ranged("bytes=262140-").await;
    assert_eq!(from.body.as_ref(), &data[262_140..]);
    let clamped = ranged("bytes=0-99999999").await;
    assert_eq!(clamped.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(clamped.body.len(), data.len());

    let beyond = ranged("bytes=99999999-").await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        beyond.header("content-range"),
        Some(&*format!("bytes */{size}"))
    );
    assert_eq!(beyond.json()["code"], "416 Requested Range Not Satisfiable");
    for bad in ["bytes=5-2", "lines=1-2", "bytes=x-", "bytes=-0", "bytes=-"] {
        assert_eq!(
            ranged(bad).await.status,
            StatusCode::RANGE_NOT_SATISFIABLE,
            "{bad}"
        );
    }
    let multi = ranged("bytes=0-1,4-5").await;
    assert_eq!(multi.status, StatusCode::BAD_REQUEST);
    assert!(multi
        .message()
        .starts_with("Requests with multiple ranges are not supported"));

    let mut headers = admin();
    headers.push(("content-range", "bytes 1-2/*"));
    let legacy = h.call_as(Method::GET, &path, &headers, b"").await;
    assert_eq!(legacy.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(legacy.body.as_ref(), &data[1..3]);
}

#[tokio::test]
async fn test_download_image_missing_data_is_404() {
    let h = Harness::new();
    h.insert_image(&image_record(&uuid_n(1), ADMIN_PROJECT, "x", 3, 1), None)
        .await;
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}/file", uuid_n(1)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let mut queued = image_record(&uuid_n(2), ADMIN_PROJECT, "q", 0, 1);
    queued.status = crate::meta::ImageStatus::Queued;
    h.insert_image(&queued, None).await;
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}/file", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}
