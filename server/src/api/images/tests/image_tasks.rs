//! `GET /v2/images/{id}/tasks`.

use std::collections::BTreeSet;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::testing::{admin, member, uuid_n, Harness, ADMIN_PROJECT};

use super::{imported, key_set};

#[tokio::test]
async fn test_image_tasks_import_task_is_glance_db_row() {
    let h = Harness::new();
    let (image_id, task_id) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2).await;
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
    let (image_id, _) = imported(&h, 1, "pa", "private", i64::MAX / 2).await;
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
    let (image_id, _) = imported(&h, 1, "pa", "public", i64::MAX / 2).await;
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
    let (expired, _) = imported(&h, 1, ADMIN_PROJECT, "private", crate::api::now() - 1).await;
    let (swept, swept_task) = imported(&h, 2, ADMIN_PROJECT, "private", i64::MAX / 2).await;
    h.meta().delete_task(&swept_task).await.unwrap();
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
    let (image_id, _) = imported(&h, 1, ADMIN_PROJECT, "private", i64::MAX / 2).await;
    let reply = h
        .call(Method::POST, &format!("/v2/images/{image_id}/tasks"), b"")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
}
