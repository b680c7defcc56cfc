//! `PATCH /v2/images/{id}` in both JSON-patch dialects.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::testing::{admin, image_record, member, uuid_n, Harness, ADMIN_PROJECT};

use super::{patch, V20, V21};

#[tokio::test]
async fn test_patch_image_v21_and_v20_operations() {
    let h = Harness::new();
    let mut image = image_record(&uuid_n(1), ADMIN_PROJECT, "old", 1, 1);
    image.properties.insert("gone".into(), "x".into());
    h.insert_image(&image, None).await;
    let reply = patch(
        &h,
        &uuid_n(1),
        V21,
        &admin(),
        &json!([
            {"op": "replace", "path": "/name", "value": "new"},
            {"op": "add", "path": "/tags", "value": ["a", "b", "a"]},
            {"op": "add", "path": "/os_distro", "value": "cirros"},
            {"op": "add", "path": "/os_distro", "value": "debian"},
            {"op": "remove", "path": "/gone"},
            {"op": "replace", "path": "/min_ram", "value": 512},
            {"op": "replace", "path": "/protected", "value": true},
            {"op": "replace", "path": "/visibility", "value": "community"},
            {"op": "add", "path": "/a~1b~0c", "value": "escaped"}
        ]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["name"], "new");
    assert_eq!(body["tags"], json!(["a", "b"]));
    assert_eq!(body["os_distro"], "debian");
    assert!(body.get("gone").is_none());
    assert_eq!(body["min_ram"], 512);
    assert_eq!(body["protected"], true);
    assert_eq!(body["visibility"], "community");
    assert_eq!(body["a/b~c"], "escaped");
    let stored = h.meta().get_image(&uuid_n(1)).await.unwrap().unwrap();
    assert_eq!(stored.name.as_deref(), Some("new"));

    let reply = patch(
        &h,
        &uuid_n(1),
        V20,
        &admin(),
        &json!([{"replace": "/name", "value": "v20"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["name"], "v20");
    // v2.0 `add` of an existing property conflicts; v2.1 `add` is an upsert (above).
    let reply = patch(
        &h,
        &uuid_n(1),
        V20,
        &admin(),
        &json!([{"add": "/os_distro", "value": "x"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(reply.message(), "Property os_distro already present.");
}

#[tokio::test]
async fn test_patch_queued_image_formats_replaced_status_kept() {
    // Glance lets the formats change while the image has no data; the patch applies to the
    // record as stored, so a status set meanwhile (an upload's `saving`) is never undone.
    let h = Harness::new();
    let id = uuid_n(1);
    let mut queued = image_record(&id, "pa", "q", 0, 1);
    queued.status = crate::meta::ImageStatus::Queued;
    (queued.size, queued.disk_format, queued.container_format) = (None, None, None);
    h.insert_image(&queued, None).await;
    let ops = json!([
        {"op": "replace", "path": "/disk_format", "value": "qcow2"},
        {"op": "replace", "path": "/container_format", "value": "bare"}
    ]);
    let reply = patch(&h, &id, V21, &member("pa"), &ops).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.message());
    let body = reply.json();
    assert_eq!(
        (
            &body["status"],
            &body["disk_format"],
            &body["container_format"],
            &body["size"]
        ),
        (
            &json!("queued"),
            &json!("qcow2"),
            &json!("bare"),
            &Value::Null
        )
    );
    let mut saving = h.meta().get_image(&id).await.unwrap().unwrap();
    saving.status = crate::meta::ImageStatus::Saving;
    h.meta().put_image(&saving).await.unwrap();
    let rename = json!([{"op": "replace", "path": "/name", "value": "renamed"}]);
    let reply = patch(&h, &id, V21, &member("pa"), &rename).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.message());
    assert_eq!(reply.json()["status"], "saving");
    let reply = patch(&h, &id, V21, &member("pa"), &ops).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.message());
}

#[tokio::test]
async fn test_patch_image_refusals() {
    let h = Harness::new();
    h.insert_image(&image_record(&uuid_n(1), "pa", "x", 1, 1), None)
        .await;
    let id = uuid_n(1);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!([{"op": "replace", "path": "/size", "value": 1}]), StatusCode::FORBIDDEN, "Attribute 'size' is read-only."),
        (json!([{"op": "replace", "path": "/status", "value": "queued"}]), StatusCode::FORBIDDEN, "Attribute 'status' is read-only."),
        (json!([{"op": "add", "path": "/deleted", "value": "x"}]), StatusCode::FORBIDDEN, "Attribute 'deleted' is reserved."),
        (json!([{"op": "add", "path": "/os_glance_import_task", "value": "x"}]), StatusCode::FORBIDDEN, "Attribute 'os_glance_import_task' is reserved."),
        (json!([{"op": "remove", "path": "/name"}]), StatusCode::FORBIDDEN, "Property name may not be removed."),
        (json!([{"op": "remove", "path": "/nope"}]), StatusCode::CONFLICT, "Property nope does not exist."),
        (json!([{"op": "replace", "path": "/nope", "value": "x"}]), StatusCode::CONFLICT, "Property nope does not exist."),
        (json!([{"op": "replace", "path": "/visibility", "value": "public"}]), StatusCode::FORBIDDEN, "You are not authorized to complete publicize_image action."),
        (json!([{"op": "replace", "path": "/owner", "value": "pb"}]), StatusCode::FORBIDDEN, "Owner can't be updated by non admin."),
        (json!([{"op": "replace", "path": "/disk_format", "value": "raw"}]), StatusCode::FORBIDDEN, "Attribute disk_format can be only replaced for a queued image."),
        (json!([{"op": "replace", "path": "/visibility", "value": "everyone"}]), StatusCode::BAD_REQUEST, "Provided object does not match schema 'image': 'everyone' is not one of ['community', 'public', 'private', 'shared'] (in visibility)"),
        (json!([{"op": "replace", "path": "/min_disk", "value": -1}]), StatusCode::BAD_REQUEST, "Provided object does not match schema 'image': -1 is less than the minimum of 0 (in min_disk)"),
        (json!([{"op": "add", "path": "/os_distro", "value": 5}]), StatusCode::BAD_REQUEST, "Provided object does not match schema 'image': 5 is not of type 'string' (in os_distro)"),
        (json!([{"op": "move", "path": "/name"}]), StatusCode::BAD_REQUEST, "Invalid operation: `move`."),
        (json!([{"op": "add", "path": "/name"}]), StatusCode::BAD_REQUEST, "Operation \"add\" requires a member named \"value\"."),
        (json!([{"op": "add", "path": "name", "value": "x"}]), StatusCode::BAD_REQUEST, "Pointer `name` does not start with \"/\"."),
        (json!([{"op": "add", "path": "/a/b", "value": "x"}]), StatusCode::BAD_REQUEST, "Invalid JSON pointer for this resource: '/a/b'"),
        (json!([{"op": "add", "path": "/a~2", "value": "x"}]), StatusCode::BAD_REQUEST, "Pointer `/a~2` contains \"~\" not part of a recognized escape sequence."),
        (json!({"op": "add"}), StatusCode::BAD_REQUEST, "Request body must be a JSON array of operation objects."),
    ];
    for (ops, status, message) in cases {
        let reply = patch(&h, &id, V21, &member("pa"), &ops).await;
        assert_eq!(reply.status, status, "{ops}");
        assert_eq!(reply.message(), message, "{ops}");
    }
    // Nothing was changed by the refused patches.
    let stored = h.meta().get_image(&id).await.unwrap().unwrap();
    assert_eq!(stored, image_record(&id, "pa", "x", 1, 1));

    let reply = patch(&h, &id, "application/json", &member("pa"), &json!([])).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply
        .header("accept-patch")
        .unwrap()
        .contains("v2.1-json-patch"));
    let mut headers = member("pa");
    headers.push(("content-type", V21));
    let reply = h
        .call_as(Method::PATCH, &format!("/v2/images/{id}"), &headers, b"[{")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.message(), "Malformed JSON in request body.");
}
