//! `DELETE /v2/images/{id}`.

use http::{Method, StatusCode};

use crate::api::testing::{image_record, uuid_n, Harness, ADMIN_PROJECT};

#[tokio::test]
async fn test_delete_image_removes_record_then_file() {
    let h = Harness::new();
    let mut protected = image_record(&uuid_n(1), ADMIN_PROJECT, "p", 3, 1);
    protected.protected = true;
    h.insert_image(&protected, Some(b"abc")).await;
    let reply = h
        .call(Method::DELETE, &format!("/v2/images/{}", uuid_n(1)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.message(),
        format!("Image {} is protected and cannot be deleted.", uuid_n(1))
    );

    h.insert_image(
        &image_record(&uuid_n(2), ADMIN_PROJECT, "d", 3, 1),
        Some(b"abc"),
    )
    .await;
    assert!(h.has_data(&uuid_n(2)));
    let reply = h
        .call(Method::DELETE, &format!("/v2/images/{}", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(h.meta().get_image(&uuid_n(2)).await.unwrap().is_none());
    assert!(!h.has_data(&uuid_n(2)));
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
