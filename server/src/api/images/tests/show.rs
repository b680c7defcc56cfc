//! `GET /v2/images/{id}`, the schemas, and requests that carry a body where none belongs.

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::json;

use crate::api::testing::{image_record, member, uuid_n, Harness, ADMIN_PROJECT};

use super::{ids, imported, key_set, patch, V21};

#[tokio::test]
async fn test_get_image_has_glance_fields_and_flat_properties() {
    let h = Harness::new();
    let mut image = image_record(
        &uuid_n(1),
        ADMIN_PROJECT,
        "cirros",
        4_521_984,
        1_795_541_301,
    );
    image.properties.insert("os_distro".into(), "cirros".into());
    image
        .properties
        .insert("os_glance_stage_host".into(), "hidden".into());
    image.tags = vec!["t1".into(), "t2".into()];
    h.insert_image(&image, None).await;
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}", uuid_n(1)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    let keys = key_set(&body);
    // 01-ok-extra-props's image, key for key.
    let expected: BTreeSet<&str> = [
        "os_distro",
        "name",
        "disk_format",
        "container_format",
        "visibility",
        "size",
        "virtual_size",
        "status",
        "checksum",
        "protected",
        "min_ram",
        "min_disk",
        "owner",
        "os_hidden",
        "os_hash_algo",
        "os_hash_value",
        "id",
        "created_at",
        "updated_at",
        "tags",
        "self",
        "file",
        "schema",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    assert_eq!(body["os_distro"], "cirros");
    assert_eq!(body["size"], 4_521_984);
    assert_eq!(body["tags"], json!(["t1", "t2"]));
    assert_eq!(body["created_at"], "2026-11-24T17:28:21Z");
    assert_eq!(body["self"], format!("/v2/images/{}", uuid_n(1)));
    assert_eq!(body["file"], format!("/v2/images/{}/file", uuid_n(1)));
    assert_eq!(body["schema"], "/v2/schemas/image");
    assert_eq!(body["os_hidden"], false);
}

#[tokio::test]
async fn test_images_visibility_between_projects() {
    let h = Harness::new();
    h.insert_image(&image_record(&uuid_n(1), "pa", "private", 1, 1), None)
        .await;
    let mut public = image_record(&uuid_n(2), "pa", "public", 1, 2);
    public.visibility = "public".into();
    h.insert_image(&public, None).await;
    let mut community = image_record(&uuid_n(3), "pa", "community", 1, 3);
    community.visibility = "community".into();
    h.insert_image(&community, None).await;

    let hidden = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{}", uuid_n(1)),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.message(),
        format!("No image found with ID {}", uuid_n(1))
    );
    let seen = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{}", uuid_n(2)),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(seen.status, StatusCode::OK);

    // Lists: community images only with visibility=community (or all) for non-owners.
    let list = h
        .call_as(Method::GET, "/v2/images", &member("pb"), b"")
        .await
        .json();
    assert_eq!(ids(&list), vec![uuid_n(2)]);
    let list = h
        .call_as(
            Method::GET,
            "/v2/images?visibility=community",
            &member("pb"),
            b"",
        )
        .await
        .json();
    assert_eq!(ids(&list), vec![uuid_n(3)]);
    let list = h
        .call_as(Method::GET, "/v2/images", &member("pa"), b"")
        .await
        .json();
    assert_eq!(ids(&list), vec![uuid_n(3), uuid_n(2), uuid_n(1)]);

    // Visible but not owned: changes are 403; invisible: 404.
    let reply = patch(&h, &uuid_n(2), V21, &member("pb"), &json!([])).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = h
        .call_as(
            Method::DELETE,
            &format!("/v2/images/{}", uuid_n(2)),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = h
        .call_as(
            Method::DELETE,
            &format!("/v2/images/{}", uuid_n(1)),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{}/file", uuid_n(1)),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_get_and_delete_with_body_are_400_and_change_nothing() {
    let h = Harness::new();
    let (image_id, task_id) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2).await;
    let mut image = h.meta().get_image(&image_id).await.unwrap().unwrap();
    image.tags = vec!["gold".into()];
    h.insert_image(&image, Some(b"data")).await;
    for (method, path) in [
        (Method::GET, "/v2/images".to_owned()),
        (Method::GET, format!("/v2/images/{image_id}")),
        (Method::GET, format!("/v2/images/{image_id}/file")),
        (Method::GET, format!("/v2/images/{image_id}/tasks")),
        (Method::DELETE, format!("/v2/images/{image_id}")),
        (Method::DELETE, format!("/v2/images/{image_id}/tags/gold")),
        (Method::GET, "/v2/tasks".to_owned()),
        (Method::GET, format!("/v2/tasks/{task_id}")),
        (Method::GET, "/v2/schemas/image".to_owned()),
        (Method::GET, "/v2/info/import".to_owned()),
    ] {
        let reply = h.call(method.clone(), &path, b"{}").await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(
            reply.message(),
            "A body is not expected with this request.",
            "{method} {path}"
        );
        let without = h.call(method.clone(), &path, b"").await;
        assert!(
            without.status.is_success(),
            "{method} {path}: {}",
            without.status
        );
        if method == Method::DELETE {
            // Undo the successful bodiless delete for the next round.
            h.insert_image(&image, Some(b"data")).await;
        }
    }
    // Refused before routing concerns of its own: an unknown path stays 404, a wrong
    // method 405.
    let unknown = h.call(Method::GET, "/v2/nothing", b"{}").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let task_delete = h
        .call(Method::DELETE, &format!("/v2/tasks/{task_id}"), b"{}")
        .await;
    assert_eq!(task_delete.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn test_image_schemas_parse() {
    let h = Harness::new();
    let image = h.call(Method::GET, "/v2/schemas/image", b"").await.json();
    assert_eq!(image["name"], "image");
    assert_eq!(image["additionalProperties"], json!({"type": "string"}));
    let images = h.call(Method::GET, "/v2/schemas/images", b"").await.json();
    assert_eq!(images["name"], "images");
    assert_eq!(images["properties"]["images"]["items"]["name"], "image");
}
