//! Tasks API tests, checked against the recorded Glance exchanges
//! (`reference/glance-wire/legacy-noconv/NN-*.json`, numbers in the comments).

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::testing::{
    admin, import_body, member, task_record, uuid_n, Harness, ADMIN_PROJECT, SOURCE,
};
use crate::config::AuthMode;
use crate::meta::TaskStatus;

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn test_create_task_valid_import_is_201_pending() {
    let h = Harness::new();
    let mut headers = admin();
    headers.push(("host", "sluice.test:9292"));
    let reply = h.create_task_as(&headers, &import_body()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let task = reply.json();
    // glance/tests/functional/v2/test_tasks.py::test_task_lifecycle's exact key set.
    assert_eq!(
        keys(&task),
        set(&[
            "created_at",
            "id",
            "input",
            "message",
            "owner",
            "schema",
            "self",
            "status",
            "type",
            "result",
            "updated_at",
            "request_id",
            "user_id"
        ])
    );
    let id = task["id"].as_str().unwrap();
    assert_eq!(task["status"], "pending");
    assert_eq!(task["type"], "import");
    assert_eq!(task["input"], import_body()["input"]);
    assert_eq!(task["result"], Value::Null);
    assert_eq!(task["message"], "");
    assert_eq!(task["owner"], ADMIN_PROJECT);
    assert_eq!(task["user_id"], "a0a0a0a0b1b1c2c2d3d3e4e4f5f5f6f6");
    assert_eq!(task["self"], format!("/v2/tasks/{id}"));
    assert_eq!(task["schema"], "/v2/schemas/task");
    assert_eq!(task["created_at"], task["updated_at"]);
    assert_eq!(task["created_at"].as_str().unwrap().len(), 20);
    // The configured address, never the request's Host (issue #9).
    assert_eq!(
        reply.header("location").unwrap(),
        format!("http://127.0.0.1:9292/v2/tasks/{id}")
    );
    assert_eq!(
        reply.header("x-openstack-request-id"),
        task["request_id"].as_str()
    );
    let stored = h.meta().get_task(id).await.unwrap().unwrap();
    assert!(matches!(stored.status, TaskStatus::Pending));
}

#[tokio::test]
async fn test_create_task_public_url_sets_location() {
    let h = Harness::with_config(|c| c.public_url = Some("https://images.example/".into()));
    let reply = h.create_task_as(&admin(), &import_body()).await;
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reply.header("location").unwrap(),
        format!("https://images.example/v2/tasks/{id}")
    );
}

#[tokio::test]
async fn test_create_task_by_ordinary_member_is_allowed() {
    // Glance refuses this (32-non-admin-member: 403 tasks_api_access); Sluice allows it.
    let h = Harness::new();
    let reply = h.create_task_as(&member("p1"), &import_body()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.json()["owner"], "p1");
}

/// The create-time refusals of the recordings, and Sluice's own.
#[tokio::test]
async fn test_create_task_invalid_bodies_are_400_with_glance_messages() {
    let with_input = |input: Value| json!({"type": "import", "input": input});
    let with_from = |from: Value| {
        with_input(json!({
            "import_from": from, "import_from_format": "qcow2",
            "image_properties": {"name": "x", "disk_format": "qcow2", "container_format": "bare"}
        }))
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "08-port-not-allowed",
            with_from(json!("http://127.0.0.1:9/x.qcow2")),
            "URI for legacy import task does not pass filtering: http://127.0.0.1:9/x.qcow2: \
             port 9 is not allowed (allowed ports: 80, 443, 18080)",
        ),
        (
            "09-host-not-allowed",
            with_from(json!("http://127.0.0.2:18080/small.qcow2")),
            "URI for legacy import task does not pass filtering: \
             http://127.0.0.2:18080/small.qcow2: 127.0.0.2 is not on the import allow-list",
        ),
        (
            "non-canonical address",
            with_from(json!("http://2130706433:18080/x")),
            "URI for legacy import task does not pass filtering: http://2130706433:18080/x: \
             host '2130706433' is a non-canonical IP address spelling",
        ),
        (
            "10-file-uri",
            with_from(json!("file:///etc/passwd")),
            "File based imports are not allowed. Please use a non-local source of image data.",
        ),
        (
            "11-ftp-uri",
            with_from(json!("ftp://127.0.0.1/x.qcow2")),
            "The given uri is not valid. Please specify a valid uri from the following list of supported uri ['http']",
        ),
        ("13-empty-import-from", with_from(json!("")), "Invalid location:"),
        (
            "14-missing-import-from",
            with_input(json!({"import_from_format": "qcow2", "image_properties": {}})),
            "Invalid location: None",
        ),
        ("22-missing-input", json!({"type": "import"}), "Task 'input' is required"),
        ("23-missing-type", json!({"input": {}}), "Task 'type' is required"),
        (
            "24-unknown-type",
            json!({"type": "export", "input": {}}),
            "Provided object does not match schema 'task': 'export' is not one of ['import', 'api_image_import', 'location_import']",
        ),
        (
            "26-input-not-object",
            json!({"type": "import", "input": "nope"}),
            "Provided object does not match schema 'task': 'nope' is not of type 'null', 'object'",
        ),
        ("27-input-null", json!({"type": "import", "input": null}), "Invalid location: None"),
        (
            "28-extra-top-level-field",
            json!({"type": "import", "input": import_body()["input"], "foo": "bar"}),
            "Provided object does not match schema 'task': Additional properties are not allowed ('foo' was unexpected)",
        ),
        (
            "sluice: internal task type",
            json!({"type": "api_image_import", "input": {"image_id": "x"}}),
            "Task type 'api_image_import' is not supported: Sluice runs only 'import' tasks.",
        ),
        (
            "sluice: format disagreement",
            with_input(json!({
                "import_from": SOURCE, "import_from_format": "qcow2",
                "image_properties": {"disk_format": "raw"}
            })),
            "import_from_format 'qcow2' does not match image_properties disk_format 'raw'; Sluice stores images in the format they arrive in.",
        ),
    ];
    let h = Harness::new();
    for (name, body, message) in cases {
        let reply = h.create_task_as(&admin(), &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}");
        let json = reply.json();
        assert_eq!(json["code"], "400 Bad Request", "{name}");
        assert_eq!(json["title"], "Bad Request", "{name}");
        assert_eq!(reply.message(), message, "{name}");
        assert!(json["message"]
            .as_str()
            .unwrap()
            .ends_with("<br /><br />\n\n\n"));
    }
    assert!(crate::meta::testing::all_tasks(h.meta())
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn test_create_task_malformed_and_empty_bodies_are_400() {
    let h = Harness::new();
    // 29-malformed-json and 30-empty-body.
    for (raw, message) in [
        (&b"{not json"[..], "Malformed JSON in request body."),
        (&b""[..], "Body expected in request."),
        (&[0xff, 0xfe, 0x00][..], "Malformed JSON in request body."),
    ] {
        let reply = h.call(Method::POST, "/v2/tasks", raw).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.message(), message);
    }
}

#[tokio::test]
async fn test_create_task_missing_optional_inputs_is_accepted() {
    // 15, 16, 17: Glance accepts these and fails the task asynchronously; so does Sluice.
    let h = Harness::new();
    for input in [
        json!({"import_from": SOURCE, "image_properties": {"disk_format": "qcow2"}}),
        json!({"import_from": SOURCE, "import_from_format": "qcow2"}),
        json!({"import_from": SOURCE, "import_from_format": "qcow2", "image_properties": {}}),
    ] {
        let reply = h
            .create_task_as(&admin(), &json!({"type": "import", "input": input}))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
}

#[tokio::test]
async fn test_create_task_wrong_content_type_is_accepted() {
    // 31-wrong-content-type: Glance parses the body anyway.
    let h = Harness::new();
    let mut headers = admin();
    headers.push(("content-type", "text/plain"));
    let body = serde_json::to_vec(&import_body()).unwrap();
    let reply = h.call_as(Method::POST, "/v2/tasks", &headers, &body).await;
    assert_eq!(reply.status, StatusCode::CREATED);
}

#[tokio::test]
async fn test_create_task_body_too_large_is_413() {
    let h = Harness::with_config(|c| c.max_request_body = 64);
    let reply = h.create_task_as(&admin(), &import_body()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json()["code"], "413 Request Entity Too Large");
}

#[tokio::test]
async fn test_create_task_full_queue_is_503_and_leaves_no_task() {
    let h = Harness::with_config(|c| c.queue_capacity = 1);
    assert_eq!(
        h.create_task_as(&admin(), &import_body()).await.status,
        StatusCode::CREATED
    );
    let reply = h.create_task_as(&admin(), &import_body()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["code"], "503 Service Unavailable");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(
        crate::meta::testing::all_tasks(h.meta())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn test_get_task_unknown_is_404() {
    let h = Harness::new();
    // 34-get-unknown-task and 35-get-non-uuid-task.
    for id in ["3e435003-ccc3-455a-b774-49d557ea3507", "not-a-uuid"] {
        let reply = h.call(Method::GET, &format!("/v2/tasks/{id}"), b"").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.message(), format!("Could not find task {id}"));
        assert_eq!(reply.json()["code"], "404 Not Found");
    }
}

#[tokio::test]
async fn test_get_task_unknown_without_json_accept_is_plain_text() {
    // python-glanceclient sends `Accept: */*` and parses webob's plain-text form only.
    let h = Harness::new();
    let id = "3e435003-ccc3-455a-b774-49d557ea3507";
    let reply = h
        .call_as(
            Method::GET,
            &format!("/v2/tasks/{id}"),
            &[("accept", "*/*")],
            b"",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=UTF-8")
    );
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        format!("404 Not Found\n\nCould not find task {id}\n\n   ")
    );
}

#[tokio::test]
async fn test_tasks_owner_isolation_between_projects() {
    let h = Harness::new();
    let a = h.create_task_as(&member("pa"), &import_body()).await.json();
    let b = h.create_task_as(&member("pb"), &import_body()).await.json();
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let own = h
        .call_as(
            Method::GET,
            &format!("/v2/tasks/{a_id}"),
            &member("pa"),
            b"",
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    // Glance answers 403 (not 404) for a task of another project.
    let other = h
        .call_as(
            Method::GET,
            &format!("/v2/tasks/{b_id}"),
            &member("pa"),
            b"",
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.message(), format!("Forbidden to get task {b_id}"));

    let listed = h
        .call_as(Method::GET, "/v2/tasks", &member("pa"), b"")
        .await
        .json();
    let ids: Vec<&str> = listed["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a_id]);
    // A marker from another project is refused.
    let marker = h
        .call_as(
            Method::GET,
            &format!("/v2/tasks?marker={b_id}"),
            &member("pa"),
            b"",
        )
        .await;
    assert_eq!(marker.status, StatusCode::FORBIDDEN);

    let all = h.call(Method::GET, "/v2/tasks", b"").await.json();
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2);
    let admin_get = h.call(Method::GET, &format!("/v2/tasks/{b_id}"), b"").await;
    assert_eq!(admin_get.status, StatusCode::OK);
}

#[tokio::test]
async fn test_task_delete_is_405_allow_get_even_for_unknown_id() {
    let h = Harness::new();
    // 37-delete-task.
    let reply = h
        .call(Method::DELETE, &format!("/v2/tasks/{}", uuid_n(1)), b"")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    assert_eq!(
        reply.json()["message"],
        "This operation is currently not permitted on Glance Tasks. They are auto deleted after \
         reaching the time based on their expires_at property."
    );
}

#[tokio::test]
async fn test_tasks_wrong_methods_are_405_with_allow() {
    let h = Harness::new();
    // 38-put-tasks.
    let reply = h.call(Method::PUT, "/v2/tasks", b"{}").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
    assert_eq!(
        reply.json()["message"],
        "The method PUT is not allowed for this resource. <br /><br />\n"
    );
    let reply = h
        .call(Method::POST, &format!("/v2/tasks/{}", uuid_n(1)), b"{}")
        .await;
    assert_eq!(reply.header("allow"), Some("GET, DELETE"));
    let reply = h.call(Method::DELETE, "/v2/schemas/task", b"").await;
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = h.call(Method::GET, "/v2/nothing", b"").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(reply
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
}

#[tokio::test]
async fn test_list_tasks_bad_parameters_are_400() {
    let h = Harness::new();
    // 39..43, plus the non-integer limit, unknown marker and unknown sort key.
    let unknown = uuid_n(99);
    for (query, message) in [
        ("status=bogus", "Invalid status value: bogus".to_owned()),
        ("type=export", "Invalid type value: export".to_owned()),
        ("limit=-1", "limit param must be positive".to_owned()),
        ("limit=ten", "limit param must be an integer".to_owned()),
        ("marker=nope", "Invalid marker format".to_owned()),
        ("sort_dir=up", "Invalid sort direction: up".to_owned()),
        (
            "sort_key=input",
            "Sort key supplied was not valid.".to_owned(),
        ),
        (
            &*format!("marker={unknown}"),
            format!("Invalid marker. Task {unknown} could not be found."),
        ),
    ] {
        let reply = h
            .call(Method::GET, &format!("/v2/tasks?{query}"), b"")
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.message(), message, "{query}");
    }
}

#[tokio::test]
async fn test_list_tasks_paging_follows_next_links() {
    let h = Harness::new();
    for n in 1..=5 {
        h.meta()
            .put_task(&task_record(
                &uuid_n(n),
                ADMIN_PROJECT,
                TaskStatus::Pending,
                1000 + i64::from(n),
            ))
            .await
            .unwrap();
    }
    // 44-list-limit-2: newest first, `next` while pages are full.
    let page = h.call(Method::GET, "/v2/tasks?limit=2", b"").await.json();
    let ids = |page: &Value| -> Vec<String> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&page), vec![uuid_n(5), uuid_n(4)]);
    assert_eq!(page["first"], "/v2/tasks?limit=2");
    assert_eq!(page["schema"], "/v2/schemas/tasks");
    assert_eq!(
        page["next"],
        format!("/v2/tasks?limit=2&marker={}", uuid_n(4))
    );
    let stub = &page["tasks"][0];
    assert_eq!(
        keys(stub),
        set(&[
            "id",
            "type",
            "status",
            "owner",
            "created_at",
            "updated_at",
            "self",
            "schema"
        ])
    );

    let page2 = h
        .call(Method::GET, page["next"].as_str().unwrap(), b"")
        .await
        .json();
    assert_eq!(ids(&page2), vec![uuid_n(3), uuid_n(2)]);
    let page3 = h
        .call(Method::GET, page2["next"].as_str().unwrap(), b"")
        .await
        .json();
    assert_eq!(ids(&page3), vec![uuid_n(1)]);
    assert!(page3.get("next").is_none());

    let asc = h
        .call(
            Method::GET,
            "/v2/tasks?sort_key=created_at&sort_dir=asc&limit=3",
            b"",
        )
        .await
        .json();
    assert_eq!(ids(&asc), vec![uuid_n(1), uuid_n(2), uuid_n(3)]);
}

#[tokio::test]
async fn test_list_tasks_filters_and_sort_by_owner() {
    let h = Harness::new();
    let mut done = task_record(&uuid_n(1), "pb", TaskStatus::Success, 10);
    done.expires_at = Some(i64::MAX / 2);
    done.result = Some(json!({"image_id": uuid_n(50)}));
    h.meta().put_task(&done).await.unwrap();
    h.meta()
        .put_task(&task_record(&uuid_n(2), "pa", TaskStatus::Pending, 20))
        .await
        .unwrap();
    h.meta()
        .put_task(&task_record(&uuid_n(3), "pc", TaskStatus::Failure, 30))
        .await
        .unwrap();
    // An expired task is hidden from lists.
    let mut expired = task_record(&uuid_n(4), "pa", TaskStatus::Failure, 5);
    expired.expires_at = Some(6);
    h.meta().put_task(&expired).await.unwrap();

    // 45-list-filter-success.
    let reply = h
        .call(
            Method::GET,
            "/v2/tasks?status=success&type=import&limit=3",
            b"",
        )
        .await
        .json();
    let tasks = reply["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], uuid_n(1));
    assert!(tasks[0]["expires_at"].is_string());
    assert_eq!(
        reply["first"],
        "/v2/tasks?status=success&type=import&limit=3"
    );
    assert!(reply.get("next").is_none());

    let by_owner = h
        .call(Method::GET, "/v2/tasks?sort_key=owner&sort_dir=asc", b"")
        .await
        .json();
    let owners: Vec<&str> = by_owner["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, vec!["pa", "pb", "pc"]);

    let filtered = h.call(Method::GET, "/v2/tasks?owner=pc", b"").await.json();
    assert_eq!(filtered["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn test_get_task_additive_fields_by_status() {
    let h = Harness::new();
    let mut failed = task_record(&uuid_n(1), ADMIN_PROJECT, TaskStatus::Failure, 10);
    failed.reason = Some("backing_file".into());
    failed.message = "qcow2 image references backing file '/etc/passwd'".into();
    failed.expires_at = Some(20);
    h.meta().put_task(&failed).await.unwrap();
    h.meta()
        .put_task(&task_record(
            &uuid_n(2),
            ADMIN_PROJECT,
            TaskStatus::Processing,
            10,
        ))
        .await
        .unwrap();
    let mut ok = task_record(&uuid_n(3), ADMIN_PROJECT, TaskStatus::Success, 10);
    ok.result = Some(json!({"image_id": uuid_n(9)}));
    ok.expires_at = Some(20);
    h.meta().put_task(&ok).await.unwrap();

    let failed = h
        .call(Method::GET, &format!("/v2/tasks/{}", uuid_n(1)), b"")
        .await
        .json();
    assert_eq!(failed["reason"], "backing_file");
    assert_eq!(failed["result"], Value::Null);
    assert!(failed.get("progress").is_none());
    assert_eq!(failed["expires_at"], "1970-01-01T00:00:20Z");

    let running = h
        .call(Method::GET, &format!("/v2/tasks/{}", uuid_n(2)), b"")
        .await
        .json();
    assert_eq!(running["progress"]["bytes_received"], 0);
    assert_eq!(running["progress"]["bytes_total"], Value::Null);
    assert_eq!(running["progress"]["queue_position"], Value::Null);
    assert!(running.get("reason").is_none());

    let ok = h
        .call(Method::GET, &format!("/v2/tasks/{}", uuid_n(3)), b"")
        .await
        .json();
    assert_eq!(ok["result"]["image_id"], uuid_n(9));
    assert!(ok.get("progress").is_none() && ok.get("reason").is_none());
}

#[tokio::test]
async fn test_task_schemas_are_json_with_sluice_fields() {
    let h = Harness::new();
    // 46-schema-task and 47-schema-tasks, plus Sluice's additive properties.
    let task = h.call(Method::GET, "/v2/schemas/task", b"").await;
    assert_eq!(task.status, StatusCode::OK);
    let task = task.json();
    assert_eq!(task["name"], "task");
    assert!(task["properties"]["progress"].is_object());
    assert!(task["properties"]["reason"].is_object());
    assert_eq!(
        task["properties"]["type"]["enum"],
        json!(["import", "api_image_import", "location_import"])
    );
    let tasks = h.call(Method::GET, "/v2/schemas/tasks", b"").await.json();
    assert_eq!(tasks["name"], "tasks");
    assert_eq!(
        tasks["links"],
        json!([{"rel": "describedby", "href": "{schema}"}])
    );
    let items = &tasks["properties"]["tasks"]["items"]["properties"];
    assert!(items["progress"].is_object() && items["reason"].is_object());
    assert!(items.get("input").is_none());
}

#[tokio::test]
async fn test_proxy_auth_without_identity_is_401_json() {
    let h = Harness::with_config(|c| c.auth.mode = AuthMode::Proxy);
    let reply = h.call_as(Method::GET, "/v2/tasks", &[], b"").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["code"], "401 Unauthorized");
    // Even a 405 needs credentials first.
    let reply = h.call_as(Method::DELETE, "/v2/tasks/x", &[], b"").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Version discovery is public.
    let reply = h.call_as(Method::GET, "/versions", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = h.call_as(Method::GET, "/v2/tasks", &member("p"), b"").await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn test_versions_root_is_300_and_versions_is_200() {
    let h = Harness::new();
    // 49-versions.
    let root = h
        .call_as(Method::GET, "/", &[("host", "127.0.0.1:9292")], b"")
        .await;
    assert_eq!(root.status, StatusCode::MULTIPLE_CHOICES);
    let body = root.json();
    // Glance lists v2.18 first; Sluice the newest version it implements (schemas.rs).
    assert_eq!(body["versions"][0]["id"], "v2.12");
    assert_eq!(body["versions"][0]["status"], "CURRENT");
    assert_eq!(
        body["versions"][0]["links"][0]["href"],
        "http://127.0.0.1:9292/v2/"
    );
    let versions = h.call(Method::GET, "/versions", b"").await;
    assert_eq!(versions.status, StatusCode::OK);
    let info = h.call(Method::GET, "/v2/info/import", b"").await.json();
    assert_eq!(
        info["import-methods"]["value"],
        json!(["glance-direct", "web-download"])
    );
}

#[tokio::test]
async fn test_hostile_requests_get_error_responses() {
    let h = Harness::new();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let long_path = format!("/v2/images/{}", "a".repeat(60_000));
    type Case<'a> = (Method, String, Vec<(&'a str, &'a str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (Method::POST, "/v2/tasks".into(), vec![], deep.into_bytes()),
        (Method::POST, "/v2/tasks".into(), vec![], b"[1,2]".to_vec()),
        (
            Method::POST,
            "/v2/tasks".into(),
            vec![],
            b"\"type\"".to_vec(),
        ),
        (
            Method::POST,
            "/v2/tasks".into(),
            vec![("content-length", "x")],
            b"{}".to_vec(),
        ),
        (Method::GET, long_path, vec![], vec![]),
        (Method::GET, "/v2/images/%00%ff".into(), vec![], vec![]),
        (
            Method::GET,
            "/v2/tasks?limit=99999999999999999999999999999999999999999".into(),
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/v2/images?size_min=-1&sort=:,".into(),
            vec![],
            vec![],
        ),
        (
            Method::GET,
            "/v2/images/x/file".into(),
            vec![("range", "bytes=0-18446744073709551616")],
            vec![],
        ),
        (
            Method::PATCH,
            "/v2/images/x".into(),
            vec![(
                "content-type",
                "application/openstack-images-v2.1-json-patch",
            )],
            b"[{\"op\":\"add\",\"path\":\"/min_ram\",\"value\":1e400}]".to_vec(),
        ),
    ];
    for (method, path, headers, body) in cases {
        let mut all = admin();
        all.extend(
            headers
                .iter()
                .copied()
                .filter(|(_, v)| v.parse::<http::HeaderValue>().is_ok()),
        );
        let reply = h.call_as(method, &path, &all, &body).await;
        assert!(reply.status.is_client_error(), "{path}: {}", reply.status);
        assert!(reply.json()["code"].is_string(), "{path}");
    }
}

#[test]
fn test_task_row_json_failure_has_reason_and_null_expiry_when_unset() {
    let mut failed = task_record(&uuid_n(1), "pa", TaskStatus::Failure, 10);
    failed.reason = Some("backing_file".into());
    failed.message = "qcow2 image has a backing file".into();
    failed.request_id = None;
    let row = crate::api::tasks::task_row_json(&failed, &uuid_n(2));
    assert_eq!(row["reason"], "backing_file");
    assert_eq!(row["message"], "qcow2 image has a backing file");
    assert_eq!(row["expires_at"], Value::Null);
    assert_eq!(row["request_id"], Value::Null);
    assert_eq!(row["result"], Value::Null);
    assert_eq!(row["image_id"], uuid_n(2));
    let ok = task_record(&uuid_n(3), "pa", TaskStatus::Success, 10);
    assert!(crate::api::tasks::task_row_json(&ok, &uuid_n(2))
        .get("reason")
        .is_none());
}
