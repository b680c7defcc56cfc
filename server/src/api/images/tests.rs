//! Images API tests on records and files inserted directly.

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::body::FILE_CHUNK;
use crate::api::testing::{
    admin, image_record, member, task_record, uuid_n, Harness, ADMIN_PROJECT,
};
use crate::meta::TaskStatus;

const V21: &str = "application/openstack-images-v2.1-json-patch";
const V20: &str = "application/openstack-images-v2.0-json-patch";

fn ids(page: &Value) -> Vec<String> {
    page["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn patch(
    h: &Harness,
    id: &str,
    media: &str,
    who: &[(&str, &str)],
    ops: &Value,
) -> crate::api::testing::Reply {
    let mut headers = who.to_vec();
    headers.push(("content-type", media));
    h.call_as(
        Method::PATCH,
        &format!("/v2/images/{id}"),
        &headers,
        &serde_json::to_vec(ops).unwrap(),
    )
    .await
}

/// The keys of a JSON object.
fn key_set(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

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
    h.insert_image(&image, None);
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
    h.insert_image(&image_record(&uuid_n(1), "pa", "private", 1, 1), None);
    let mut public = image_record(&uuid_n(2), "pa", "public", 1, 2);
    public.visibility = "public".into();
    h.insert_image(&public, None);
    let mut community = image_record(&uuid_n(3), "pa", "community", 1, 3);
    community.visibility = "community".into();
    h.insert_image(&community, None);

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
async fn test_list_images_sort_paging_and_filters() {
    let h = Harness::new();
    let specs = [(1, "b", 30), (2, "a", 10), (3, "c", 20), (4, "d", 40)];
    for (n, name, size) in specs {
        let mut image = image_record(&uuid_n(n), ADMIN_PROJECT, name, size, i64::from(n));
        if n == 4 {
            image.disk_format = Some("qcow2".into());
            image.tags = vec!["gold".into()];
            image.properties.insert("os_distro".into(), "debian".into());
        }
        h.insert_image(&image, None);
    }
    let h = &h;
    let get =
        |q: &'static str| async move { h.call(Method::GET, &format!("/v2/images{q}"), b"").await };

    let page = get("?limit=2").await.json();
    assert_eq!(ids(&page), vec![uuid_n(4), uuid_n(3)]);
    assert_eq!(page["first"], "/v2/images?limit=2");
    assert_eq!(page["schema"], "/v2/schemas/images");
    assert_eq!(
        page["next"],
        format!("/v2/images?limit=2&marker={}", uuid_n(3))
    );
    let page2 = h
        .call(Method::GET, page["next"].as_str().unwrap(), b"")
        .await
        .json();
    assert_eq!(ids(&page2), vec![uuid_n(2), uuid_n(1)]);

    assert_eq!(ids(&get("?sort=name:asc").await.json())[0], uuid_n(2));
    assert_eq!(
        ids(&get("?sort_key=size&sort_dir=asc").await.json()),
        vec![uuid_n(2), uuid_n(3), uuid_n(1), uuid_n(4)]
    );
    assert_eq!(
        ids(
            &get("?sort_key=name&sort_key=size&sort_dir=desc&sort_dir=asc")
                .await
                .json()
        )[0],
        uuid_n(4)
    );
    assert_eq!(ids(&get("?name=c").await.json()), vec![uuid_n(3)]);
    assert_eq!(
        ids(&get("?name=in:a,%22b%22").await.json()),
        vec![uuid_n(2), uuid_n(1)]
    );
    assert_eq!(
        ids(&get("?disk_format=qcow2").await.json()),
        vec![uuid_n(4)]
    );
    assert_eq!(ids(&get("?tag=gold").await.json()), vec![uuid_n(4)]);
    assert_eq!(ids(&get("?os_distro=debian").await.json()), vec![uuid_n(4)]);
    assert_eq!(
        ids(&get("?size_min=20&size_max=30").await.json()),
        vec![uuid_n(3), uuid_n(1)]
    );
    assert_eq!(ids(&get("?status=active&visibility=shared&owner=1f1f1f1f2e2e3d3d4c4c5b5b6a6a7979&container_format=bare").await.json()).len(), 4);
    assert!(ids(&get("?os_hidden=true").await.json()).is_empty());

    for (query, message) in [
        ("?sort=name&sort_key=size", "Old and new sorting syntax cannot be combined"),
        ("?sort_key=owner", "Invalid sort key: owner. It must be one of the following: name, status, container_format, disk_format, size, id, created_at, updated_at."),
        ("?sort_dir=sideways", "Invalid sort direction: sideways"),
        ("?limit=-3", "limit param must be positive"),
        ("?visibility=everyone", "Invalid visibility value: everyone"),
        ("?size_min=big", "Invalid value for size_min: big"),
        ("?changes-since=2020", "The 'changes-since' filter is no longer available on v2."),
        ("?name=like:x", "Unable to filter on a unknown operator 'like'."),
        ("?marker=nope", "No image found with ID nope"),
    ] {
        let reply = get(query).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.message(), message, "{query}");
    }
}

/// Images created at 17:28:20, :21 and :22 on 2026-11-24 (ids 1, 2, 3); image 1 was updated
/// at 17:30:00.
fn timed_images() -> Harness {
    let h = Harness::new();
    for n in 1..=3u32 {
        let created = 1_795_541_299 + i64::from(n);
        let mut image = image_record(&uuid_n(n), ADMIN_PROJECT, "t", 1, created);
        if n == 1 {
            image.updated_at = 1_795_541_400;
        }
        h.insert_image(&image, None);
    }
    h
}

#[tokio::test]
async fn test_list_images_time_filters_each_operator() {
    let h = timed_images();
    let at = "2026-11-24T17:28:21Z";
    for (query, want) in [
        (format!("created_at=gt:{at}"), vec![3]),
        (format!("created_at=gte:{at}"), vec![3, 2]),
        (format!("created_at=lt:{at}"), vec![1]),
        (format!("created_at=lte:{at}"), vec![2, 1]),
        (format!("created_at=eq:{at}"), vec![2]),
        (format!("created_at=neq:{at}"), vec![3, 1]),
        (format!("created_at={at}"), vec![2]),
        // Sub-second thresholds compare with the whole-second columns exactly.
        ("created_at=gt:2026-11-24T17:28:21.5Z".into(), vec![3]),
        ("created_at=lt:2026-11-24T17:28:21.5Z".into(), vec![2, 1]),
        // An offset is converted to UTC ('+' must be %2B in a query string).
        ("created_at=eq:2026-11-24T19:28:21%2B02:00".into(), vec![2]),
        ("created_at=lt:2026-11-25".into(), vec![3, 2, 1]),
        ("created_at=gt:2026-11-25".into(), vec![]),
        (
            format!("created_at=gte:{at}&created_at=lt:2026-11-24T17:28:22Z"),
            vec![2],
        ),
        ("updated_at=gte:2026-11-24T17:30:00Z".into(), vec![1]),
        ("updated_at=lt:2026-11-24T17:30:00Z".into(), vec![3, 2]),
    ] {
        let reply = h
            .call(Method::GET, &format!("/v2/images?{query}"), b"")
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.message());
        let want: Vec<String> = want.into_iter().map(uuid_n).collect();
        assert_eq!(ids(&reply.json()), want, "{query}");
    }
}

#[tokio::test]
async fn test_list_images_time_filter_bad_operator_or_time_is_400() {
    let h = timed_images();
    for (query, message) in [
        (
            "created_at=like:2026-11-24T17:28:21Z",
            "Unable to filter on a unknown operator 'like'. The operators of created_at are \
             gt, gte, lt, lte, eq and neq.",
        ),
        (
            "updated_at=gt:yesterday",
            "Invalid value 'yesterday' for parameter 'updated_at': it must be an ISO 8601 time \
             such as 2026-11-24T17:28:21Z, optionally after an operator and a colon (gt:, gte:, \
             lt:, lte:, eq:, neq:).",
        ),
        (
            "created_at=tomorrow",
            "Invalid value 'tomorrow' for parameter 'created_at': it must be an ISO 8601 time \
             such as 2026-11-24T17:28:21Z, optionally after an operator and a colon (gt:, gte:, \
             lt:, lte:, eq:, neq:).",
        ),
    ] {
        let reply = h
            .call(Method::GET, &format!("/v2/images?{query}"), b"")
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json()["code"], "400 Bad Request", "{query}");
        assert_eq!(reply.message(), message, "{query}");
    }
    for query in [
        "created_at=2026-11-24T17:28:2",
        "created_at=gt:2026-02-30T00:00:00Z",
        "created_at=gt:",
        "created_at=gte:2026-11-24T17:28:21%2B2",
        "updated_at=lt:2026-11-24T17:28:21+02:00",
    ] {
        let reply = h
            .call(Method::GET, &format!("/v2/images?{query}"), b"")
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            reply.message().starts_with("Invalid value '"),
            "{query}: {}",
            reply.message()
        );
    }
}

#[tokio::test]
async fn test_patch_image_v21_and_v20_operations() {
    let h = Harness::new();
    let mut image = image_record(&uuid_n(1), ADMIN_PROJECT, "old", 1, 1);
    image.properties.insert("gone".into(), "x".into());
    h.insert_image(&image, None);
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
    let stored = h.meta().get_image(&uuid_n(1)).unwrap().unwrap();
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
    h.insert_image(&queued, None);
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
    let mut saving = h.meta().get_image(&id).unwrap().unwrap();
    saving.status = crate::meta::ImageStatus::Saving;
    h.meta().put_image(&saving).unwrap();
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
    h.insert_image(&image_record(&uuid_n(1), "pa", "x", 1, 1), None);
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
    let stored = h.meta().get_image(&id).unwrap().unwrap();
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

#[tokio::test]
async fn test_image_tags_put_and_delete() {
    let h = Harness::new();
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, ADMIN_PROJECT, "x", 1, 1), None);
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

#[tokio::test]
async fn test_delete_image_removes_record_then_file() {
    let h = Harness::new();
    let mut protected = image_record(&uuid_n(1), ADMIN_PROJECT, "p", 3, 1);
    protected.protected = true;
    h.insert_image(&protected, Some(b"abc"));
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
    );
    assert!(h.has_data(&uuid_n(2)));
    let reply = h
        .call(Method::DELETE, &format!("/v2/images/{}", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(h.meta().get_image(&uuid_n(2)).unwrap().is_none());
    assert!(!h.has_data(&uuid_n(2)));
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_download_image_whole_and_ranges() {
    let h = Harness::new();
    // More than one chunk, and not a multiple of the chunk size.
    let data: Vec<u8> = (0..FILE_CHUNK * 2 + 7).map(|i| (i % 251) as u8).collect();
    let size = data.len() as u64;
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, ADMIN_PROJECT, "x", size, 1), Some(&data));
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
    h.insert_image(&image_record(&uuid_n(1), ADMIN_PROJECT, "x", 3, 1), None);
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}/file", uuid_n(1)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let mut queued = image_record(&uuid_n(2), ADMIN_PROJECT, "q", 0, 1);
    queued.status = crate::meta::ImageStatus::Queued;
    h.insert_image(&queued, None);
    let reply = h
        .call(Method::GET, &format!("/v2/images/{}/file", uuid_n(2)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

/// An image of `owner` (visibility `visibility`) imported by a successful task that expires at
/// `expires_at`; returns (image id, task id).
fn imported(
    h: &Harness,
    n: u32,
    owner: &str,
    visibility: &str,
    expires_at: i64,
) -> (String, String) {
    let (image_id, task_id) = (uuid_n(n), uuid_n(n + 100));
    let mut task = task_record(&task_id, owner, TaskStatus::Success, 1_795_541_301);
    task.updated_at = 1_795_541_305;
    task.expires_at = Some(expires_at);
    task.result = Some(json!({ "image_id": image_id }));
    h.meta().put_task(&task).unwrap();
    let mut image = image_record(&image_id, owner, "imported", 1, 1_795_541_305);
    image.visibility = visibility.into();
    image.task_id = Some(task_id.clone());
    h.insert_image(&image, None);
    (image_id, task_id)
}

#[tokio::test]
async fn test_image_tasks_import_task_is_glance_db_row() {
    let h = Harness::new();
    let (image_id, task_id) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2);
    let reply = h
        .call(Method::GET, &format!("/v2/images/{image_id}/tasks"), b"")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{body}");
    let task = &tasks[0];
    // webdl-00-ok-qcow2's final_image_tasks, key for key.
    let keys = key_set(task);
    let expected: BTreeSet<&str> = [
        "id",
        "type",
        "status",
        "owner",
        "expires_at",
        "created_at",
        "updated_at",
        "deleted_at",
        "deleted",
        "image_id",
        "request_id",
        "user_id",
        "input",
        "result",
        "message",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    assert_eq!(task["id"], task_id);
    assert_eq!(task["type"], "import");
    assert_eq!(task["status"], "success");
    assert_eq!(task["owner"], ADMIN_PROJECT);
    assert_eq!(task["created_at"], "2026-11-24T17:28:21.000000");
    assert_eq!(task["updated_at"], "2026-11-24T17:28:25.000000");
    assert!(
        task["expires_at"]
            .as_str()
            .is_some_and(|e| e.ends_with(".000000")),
        "{task}"
    );
    assert_eq!(task["deleted_at"], Value::Null);
    assert_eq!(task["deleted"], false);
    assert_eq!(task["image_id"], image_id);
    assert_eq!(task["result"], json!({ "image_id": image_id }));
    assert_eq!(task["request_id"], "req-x");
    assert_eq!(task["user_id"], "u");
    assert_eq!(task["message"], "");
    assert_eq!(task["input"]["import_from"], crate::api::testing::SOURCE);
}

#[tokio::test]
async fn test_image_tasks_image_caller_cannot_see_is_404() {
    let h = Harness::new();
    let (image_id, _) = imported(&h, 1, "pa", "private", i64::MAX / 2);
    for (id, who) in [(image_id.as_str(), member("pb")), (&uuid_n(9), admin())] {
        let reply = h
            .call_as(Method::GET, &format!("/v2/images/{id}/tasks"), &who, b"")
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(reply.message(), format!("No image found with ID {id}"));
    }
    let own = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{image_id}/tasks"),
            &member("pa"),
            b"",
        )
        .await;
    assert_eq!(own.json()["tasks"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn test_image_tasks_public_image_other_projects_task_hidden() {
    let h = Harness::new();
    let (image_id, _) = imported(&h, 1, "pa", "public", i64::MAX / 2);
    let reply = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{image_id}/tasks"),
            &member("pb"),
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "tasks": [] }));
}

#[tokio::test]
async fn test_image_tasks_expired_or_swept_task_not_listed() {
    let h = Harness::new();
    let (expired, _) = imported(&h, 1, ADMIN_PROJECT, "private", crate::api::now() - 1);
    let (swept, swept_task) = imported(&h, 2, ADMIN_PROJECT, "private", i64::MAX / 2);
    h.meta().delete_task(&swept_task).unwrap();
    for id in [expired, swept] {
        let reply = h
            .call(Method::GET, &format!("/v2/images/{id}/tasks"), b"")
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), json!({ "tasks": [] }), "{id}");
    }
}

#[tokio::test]
async fn test_image_tasks_post_is_405_allow_get() {
    let h = Harness::new();
    let (image_id, _) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2);
    let reply = h
        .call(Method::POST, &format!("/v2/images/{image_id}/tasks"), b"")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
}

#[tokio::test]
async fn test_get_and_delete_with_body_are_400_and_change_nothing() {
    let h = Harness::new();
    let (image_id, task_id) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2);
    let mut image = h.meta().get_image(&image_id).unwrap().unwrap();
    image.tags = vec!["gold".into()];
    h.insert_image(&image, Some(b"data"));
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
            h.insert_image(&image, Some(b"data"));
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

/// Every `visibility` filter of a non-admin reads index partitions that hold all it may see.
#[tokio::test]
async fn test_list_images_member_each_visibility_filter() {
    let h = Harness::new();
    let specs = [
        (1, "pa", "private"),
        (2, "pa", "public"),
        (3, "pa", "community"),
        (4, "pa", "shared"),
        (5, "pb", "private"),
        (6, "pb", "public"),
        (7, "pb", "community"),
        (8, "pb", "shared"),
    ];
    for (n, owner, visibility) in specs {
        let mut image = image_record(&uuid_n(n), owner, visibility, 1, i64::from(n));
        image.visibility = visibility.into();
        h.insert_image(&image, None);
    }
    let list = |query: &'static str| {
        let h = &h;
        async move {
            let reply = h
                .call_as(
                    Method::GET,
                    &format!("/v2/images{query}"),
                    &member("pb"),
                    b"",
                )
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{query}");
            ids(&reply.json())
        }
    };
    let want = |ns: &[u32]| ns.iter().map(|&n| uuid_n(n)).collect::<Vec<_>>();
    assert_eq!(list("").await, want(&[8, 7, 6, 5, 2]));
    assert_eq!(list("?visibility=all").await, want(&[8, 7, 6, 5, 3, 2]));
    assert_eq!(list("?visibility=public").await, want(&[6, 2]));
    assert_eq!(list("?visibility=community").await, want(&[7, 3]));
    assert_eq!(list("?visibility=private").await, want(&[5]));
    assert_eq!(list("?visibility=shared").await, want(&[8]));
    assert_eq!(
        list("?visibility=all&limit=2&marker=00000000-0000-4000-8000-000000000006").await,
        want(&[5, 3])
    );
    assert_eq!(
        list("?sort=name:asc&visibility=all&limit=3").await,
        want(&[7, 3, 5])
    );
}
