//! The role table and the task path's image properties, through the API in-process
//! (`none` auth with identity headers; the service tests repeat the table with proxy and
//! token auth against the real binary).

use http::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::api::endpoint::Endpoint;
use crate::api::policy::{action_of, Action, Role};
use crate::api::testing::{admin, image_record, import_body, member, uuid_n, Harness, Reply};

const V21: &str = "application/openstack-images-v2.1-json-patch";

/// Identity headers: a reader (only) of `project`.
fn reader(project: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-project-id", project),
        ("x-user-id", "u-reader"),
        ("x-roles", "reader"),
    ]
}

/// Identity headers with these roles in `project`.
fn with_roles(project: &'static str, roles: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-project-id", project),
        ("x-user-id", "u-other"),
        ("x-roles", roles),
    ]
}

/// `POST /v2/tasks` importing with `properties` merged into the usual image properties.
async fn create_with(h: &Harness, who: &[(&str, &str)], properties: Value) -> Reply {
    let mut body = import_body();
    if let (Some(props), Value::Object(extra)) = (
        body["input"]["image_properties"].as_object_mut(),
        properties,
    ) {
        props.extend(extra);
    }
    h.create_task_as(who, &body).await
}

async fn patch(h: &Harness, id: &str, who: &[(&str, &str)], ops: &Value) -> Reply {
    let mut headers = who.to_vec();
    headers.push(("content-type", V21));
    h.call_as(
        Method::PATCH,
        &format!("/v2/images/{id}"),
        &headers,
        &serde_json::to_vec(ops).unwrap(),
    )
    .await
}

fn assert_denied(reply: &Reply, policy: &str) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.message());
    assert_eq!(
        reply.message(),
        format!("You are not authorized to complete {policy} action.")
    );
    assert_eq!(reply.json()["code"], "403 Forbidden");
}

#[test]
fn test_role_highest_follows_keystone_implications() {
    assert_eq!(Role::highest(["reader", "member"]), Some(Role::Member));
    assert_eq!(Role::highest(["admin"]), Some(Role::Admin));
    assert_eq!(Role::highest(["reader"]), Some(Role::Reader));
    assert_eq!(Role::highest(["_member_", "observer", "Admin"]), None);
    assert_eq!(Role::highest([]), None);
}

#[test]
fn test_action_of_writes_need_member_and_reads_reader() {
    let id = || "x".to_owned();
    for (endpoint, action) in [
        (Endpoint::CreateTask, Action::AddTask),
        (Endpoint::GetTask { id: id() }, Action::GetTask),
        (Endpoint::ImageTasks { id: id() }, Action::GetImage),
        (Endpoint::DownloadImage { id: id() }, Action::DownloadImage),
        (Endpoint::PatchImage { id: id() }, Action::ModifyImage),
        (Endpoint::ImportImage { id: id() }, Action::ModifyImage),
        (Endpoint::StageImage { id: id() }, Action::ModifyImage),
        (
            Endpoint::AddTag {
                id: id(),
                tag: id(),
            },
            Action::ModifyImage,
        ),
        (
            Endpoint::DeleteTag {
                id: id(),
                tag: id(),
            },
            Action::ModifyImage,
        ),
        (Endpoint::DeleteImage { id: id() }, Action::DeleteImage),
        (Endpoint::ListMembers { id: id() }, Action::GetMembers),
        (Endpoint::AddMember { id: id() }, Action::AddMember),
        (
            Endpoint::GetMember {
                id: id(),
                member: id(),
            },
            Action::GetMember,
        ),
        (
            Endpoint::UpdateMember {
                id: id(),
                member: id(),
            },
            Action::ModifyMember,
        ),
        (
            Endpoint::DeleteMember {
                id: id(),
                member: id(),
            },
            Action::DeleteMember,
        ),
    ] {
        assert_eq!(action_of(&endpoint), Some(action), "{endpoint:?}");
    }
    for endpoint in [
        Endpoint::Versions,
        Endpoint::ImageSchema,
        Endpoint::ImportInfo,
        Endpoint::StoresInfo,
        Endpoint::UsageInfo,
        Endpoint::MemberSchema,
        Endpoint::MembersSchema,
    ] {
        assert_eq!(action_of(&endpoint), None, "{endpoint:?}");
    }
}

#[tokio::test]
async fn test_reader_create_task_is_403_add_task() {
    let h = Harness::new();
    let reply = h.create_task_as(&reader("p1"), &import_body()).await;
    assert_denied(&reply, "add_task");
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn test_reader_patch_tags_and_delete_own_image_are_403() {
    let h = Harness::new();
    let id = uuid_n(1);
    let mut image = image_record(&id, "p1", "x", 1, 1);
    image.tags = vec!["old".into()];
    h.insert_image(&image, Some(b"x")).await;
    let who = reader("p1");
    let reply = patch(
        &h,
        &id,
        &who,
        &json!([{"op": "replace", "path": "/name", "value": "y"}]),
    )
    .await;
    assert_denied(&reply, "modify_image");
    let path = format!("/v2/images/{id}/tags/new");
    assert_denied(
        &h.call_as(Method::PUT, &path, &who, b"").await,
        "modify_image",
    );
    let path = format!("/v2/images/{id}/tags/old");
    assert_denied(
        &h.call_as(Method::DELETE, &path, &who, b"").await,
        "modify_image",
    );
    let path = format!("/v2/images/{id}");
    assert_denied(
        &h.call_as(Method::DELETE, &path, &who, b"").await,
        "delete_image",
    );
    assert_eq!(h.meta().get_image(&id).await.unwrap().unwrap(), image);
    // Reading stays allowed; downloading needs member, as Glance's download_image.
    let reply = h.call_as(Method::GET, &path, &who, b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h
        .call_as(Method::GET, &format!("{path}/file"), &who, b"")
        .await;
    assert_denied(&reply, "download_image");
}

#[tokio::test]
async fn test_caller_without_known_role_is_403_everywhere() {
    let h = Harness::new();
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, "p1", "x", 1, 1), None)
        .await;
    let who = with_roles("p1", "_member_, observer");
    for (method, path, policy) in [
        (Method::GET, "/v2/tasks".to_owned(), "get_tasks"),
        (Method::GET, "/v2/images".to_owned(), "get_images"),
        (Method::GET, format!("/v2/images/{id}"), "get_image"),
        (Method::DELETE, format!("/v2/images/{id}"), "delete_image"),
    ] {
        assert_denied(&h.call_as(method, &path, &who, b"").await, policy);
    }
    assert_denied(&h.create_task_as(&who, &import_body()).await, "add_task");
}

#[tokio::test]
async fn test_roles_imply_keystone_defaults() {
    // admin ⊃ member ⊃ reader: `member` alone reads and writes in its project.
    let h = Harness::new();
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, "p1", "x", 1, 1), None)
        .await;
    let who = with_roles("p1", "Member");
    let reply = h.call_as(Method::GET, "/v2/images", &who, b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h.create_task_as(&who, &import_body()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = patch(
        &h,
        &id,
        &who,
        &json!([{"op": "replace", "path": "/name", "value": "y"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    // `admin` alone publicizes another project's image.
    let reply = patch(
        &h,
        &id,
        &with_roles("p2", "admin"),
        &json!([{"op": "replace", "path": "/visibility", "value": "public"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn test_create_task_member_public_visibility_is_403_publicize_image() {
    let h = Harness::new();
    let reply = create_with(&h, &member("p1"), json!({"visibility": "public"})).await;
    assert_denied(&reply, "publicize_image");
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
    // Admins may; members may make an image community (communitize_image).
    let reply = create_with(&h, &admin(), json!({"visibility": "public"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = create_with(&h, &member("p1"), json!({"visibility": "community"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn test_create_task_read_only_and_reserved_properties_are_403() {
    let h = Harness::new();
    for (key, message) in [
        ("direct_url", "Attribute 'direct_url' is read-only."),
        ("self", "Attribute 'self' is read-only."),
        ("file", "Attribute 'file' is read-only."),
        ("schema", "Attribute 'schema' is read-only."),
        ("stores", "Attribute 'stores' is read-only."),
        ("id", "Attribute 'id' is read-only."),
        ("checksum", "Attribute 'checksum' is read-only."),
        ("os_hash_algo", "Attribute 'os_hash_algo' is read-only."),
        ("os_hash_value", "Attribute 'os_hash_value' is read-only."),
        ("size", "Attribute 'size' is read-only."),
        ("virtual_size", "Attribute 'virtual_size' is read-only."),
        ("status", "Attribute 'status' is read-only."),
        ("created_at", "Attribute 'created_at' is read-only."),
        ("updated_at", "Attribute 'updated_at' is read-only."),
        ("os_hidden", "Attribute 'os_hidden' is read-only."),
        ("location", "Attribute 'location' is reserved."),
        ("locations", "Attribute 'locations' is reserved."),
        ("deleted", "Attribute 'deleted' is reserved."),
        ("deleted_at", "Attribute 'deleted_at' is reserved."),
        (
            "os_glance_import_task",
            "Attribute 'os_glance_import_task' is reserved.",
        ),
        ("os_glance", "Attribute 'os_glance' is reserved."),
    ] {
        let reply = create_with(&h, &admin(), json!({ key: "x" })).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{key}");
        assert_eq!(reply.message(), message, "{key}");
    }
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn test_create_task_bad_values_are_400_with_schema_messages() {
    let h = Harness::new();
    let schema = |m: &str| format!("Provided object does not match schema 'image': {m}");
    let long = "n".repeat(256);
    let cases: Vec<(Value, String)> = vec![
        (json!({"name": long}), schema(&format!("'{long}' is too long (in name)"))),
        (json!({"name": 5}), schema("5 is not of type 'string' (in name)")),
        (json!({"tags": ["ok", long]}), schema(&format!("'{long}' is too long (in tags)"))),
        (json!({"tags": "a"}), schema("'a' is not of type 'array' (in tags)")),
        (json!({"min_ram": "lots"}), schema("'lots' is not of type 'integer' (in min_ram)")),
        (json!({"min_disk": -1}), schema("-1 is less than the minimum of 0 (in min_disk)")),
        (json!({"protected": "yes"}), schema("'yes' is not of type 'boolean' (in protected)")),
        (
            json!({"visibility": "everyone"}),
            schema("'everyone' is not one of ['community', 'public', 'private', 'shared'] (in visibility)"),
        ),
        (json!({"os_distro": 5}), schema("5 is not of type 'string' (in os_distro)")),
        (
            json!({"container_format": "bogus"}),
            schema("'bogus' is not one of ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'] (in container_format)"),
        ),
        (
            json!({ "k".repeat(256): "v" }),
            "Custom property should not be greater than 255 characters.".to_owned(),
        ),
    ];
    for (props, message) in cases {
        let reply = create_with(&h, &admin(), props.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{props}");
        assert_eq!(reply.message(), message, "{props}");
    }
    // image_properties must be an object when present.
    let mut body = import_body();
    body["input"]["image_properties"] = json!(["x"]);
    let reply = h.create_task_as(&admin(), &body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn test_create_task_over_quotas_is_413() {
    let h = Harness::with_config(|c| c.max_request_body = 1 << 20);
    let tags: Vec<String> = (0..3000).map(|i| format!("t{i}")).collect();
    let reply = create_with(&h, &admin(), json!({ "tags": tags })).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.message(),
        "The limit has been exceeded on the number of allowed image tags. Attempted: 3000, Maximum: 128"
    );
    let props: Map<String, Value> = (0..4000).map(|i| (format!("p{i}"), json!("v"))).collect();
    let reply = create_with(&h, &admin(), Value::Object(props)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.message(),
        "The limit has been exceeded on the number of allowed image properties. Attempted: 4000, Maximum: 128"
    );
    // Duplicate tags count once (tags are a set); 128 properties are fine.
    let mut dup = vec!["same"; 500];
    dup.push("other");
    let reply = create_with(&h, &admin(), json!({ "tags": dup })).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let props: Map<String, Value> = (0..128).map(|i| (format!("p{i}"), json!("v"))).collect();
    let reply = create_with(&h, &admin(), Value::Object(props)).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn test_configured_quotas_apply_to_tasks_patch_and_tags() {
    let h = Harness::with_config(|c| {
        c.image_tag_quota = 1;
        c.image_property_quota = 1;
    });
    let reply = create_with(&h, &admin(), json!({"tags": ["a", "b"]})).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let id = uuid_n(1);
    let mut image = image_record(&id, "p1", "x", 1, 1);
    image.tags = vec!["a".into()];
    image.properties.insert("os_distro".into(), "x".into());
    h.insert_image(&image, None).await;
    let reply = h
        .call(Method::PUT, &format!("/v2/images/{id}/tags/b"), b"")
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let reply = patch(
        &h,
        &id,
        &admin(),
        &json!([{"op": "add", "path": "/os_version", "value": "y"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        reply.message(),
        "The limit has been exceeded on the number of allowed image properties. Attempted: 2, Maximum: 1"
    );
    // Replacing within the quota is fine.
    let reply = patch(
        &h,
        &id,
        &admin(),
        &json!([{"op": "remove", "path": "/os_distro"}, {"op": "add", "path": "/os_version", "value": "y"}]),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn test_create_task_refusals_have_patch_status() {
    // Whatever PATCH refuses for a value, POST /v2/tasks refuses with the same status.
    let h = Harness::new();
    let id = uuid_n(1);
    h.insert_image(&image_record(&id, "p1", "x", 1, 1), None)
        .await;
    let long = "n".repeat(256);
    for (key, value) in [
        ("visibility", json!("public")),
        ("visibility", json!("everyone")),
        ("owner", json!("p2")),
        ("name", json!(long)),
        ("tags", json!([long])),
        ("min_ram", json!(-5)),
        ("protected", json!(1)),
        ("direct_url", json!("x")),
        ("checksum", json!("x")),
        ("os_glance_x", json!("x")),
        ("deleted", json!("x")),
        ("locations", json!([])),
        ("os_distro", json!(5)),
        ("os_distro", json!("v".repeat(65_536))),
    ] {
        let path = format!("/{key}");
        let by_patch = patch(
            &h,
            &id,
            &member("p1"),
            &json!([{"op": "add", "path": path, "value": value}]),
        )
        .await;
        assert!(by_patch.status.is_client_error(), "{key}");
        let by_task = create_with(&h, &member("p1"), json!({ key: value })).await;
        assert_eq!(
            by_task.status,
            by_patch.status,
            "{key}: {}",
            by_task.message()
        );
    }
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn test_create_task_owner_is_admin_only() {
    let h = Harness::new();
    let reply = create_with(&h, &member("p1"), json!({"owner": "p2"})).await;
    assert_denied(&reply, "add_image");
    let reply = create_with(&h, &member("p1"), json!({"owner": "p1"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = create_with(&h, &admin(), json!({"owner": "p2"})).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn test_none_mode_identity_without_roles_is_member() {
    let h = Harness::new();
    let who = [("x-project-id", "p1"), ("x-user-id", "u")];
    let reply = h.create_task_as(&who, &import_body()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let reply = create_with(&h, &who, json!({"visibility": "public"})).await;
    assert_denied(&reply, "publicize_image");
}
