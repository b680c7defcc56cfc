//! `PUT` and `DELETE /v2/images/{id}/tags/{tag}`.

use http::{Method, StatusCode};
use serde_json::json;

use crate::api::testing::{image_record, uuid_n, Harness, ADMIN_PROJECT};

#[tokio::test]
async fn test_image_tags_put_and_delete() {
    let h = Harness::new();
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, ADMIN_PROJECT, "x", 1, 1), None)
        .await;
    for _ in 0..2 {
        let reply = h
            .call(
                Method::PUT,
                &format!("/v2/images/{id}/tags/blue%20sky"),
                b"",
            )
            .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        assert!(reply.body.is_empty());
    }
    let image = h
        .call(Method::GET, &format!("/v2/images/{id}"), b"")
        .await
        .json();
    assert_eq!(image["tags"], json!(["blue sky"]));
    let reply = h
        .call(
            Method::DELETE,
            &format!("/v2/images/{id}/tags/blue%20sky"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = h
        .call(
            Method::DELETE,
            &format!("/v2/images/{id}/tags/blue%20sky"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.message(), "Tag blue sky not found");
    let long = "x".repeat(256);
    let reply = h
        .call(Method::PUT, &format!("/v2/images/{id}/tags/{long}"), b"")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = h
        .call(
            Method::PUT,
            &format!("/v2/images/{}/tags/x", uuid_n(9)),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
