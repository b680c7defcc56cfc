//! Image members through the API: the owner shares, the member answers, lists follow the
//! member status, and a member reads but never changes the image.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::testing::{admin, image_record, member, uuid_n, Harness, Reply};

const OWNER: &str = "aaaaaaaa000000000000000000000001";
const OTHER: &str = "bbbbbbbb000000000000000000000002";
const THIRD: &str = "cccccccc000000000000000000000003";

async fn post_member(h: &Harness, id: &str, who: &[(&str, &str)], project: &str) -> Reply {
    let mut headers = who.to_vec();
    headers.push(("content-type", "application/json"));
    let body = serde_json::to_vec(&json!({ "member": project })).unwrap();
    h.call_as(
        Method::POST,
        &format!("/v2/images/{id}/members"),
        &headers,
        &body,
    )
    .await
}

async fn put_status(
    h: &Harness,
    id: &str,
    who: &[(&str, &str)],
    project: &str,
    status: &str,
) -> Reply {
    let mut headers = who.to_vec();
    headers.push(("content-type", "application/json"));
    let body = serde_json::to_vec(&json!({ "status": status })).unwrap();
    h.call_as(
        Method::PUT,
        &format!("/v2/images/{id}/members/{project}"),
        &headers,
        &body,
    )
    .await
}

async fn list_ids(h: &Harness, who: &[(&str, &str)], query: &str) -> Vec<String> {
    let reply = h
        .call_as(Method::GET, &format!("/v2/images{query}"), who, b"")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.message());
    reply.json()["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn shared_image(h: &Harness, n: u32) -> String {
    let id = uuid_n(n);
    h.insert_image(
        &image_record(&id, OWNER, "shared", 4, 1_700_000_000),
        Some(b"data"),
    )
    .await;
    id
}

#[tokio::test]
async fn test_members_owner_shares_member_accepts_and_lists() {
    let h = Harness::new();
    let id = shared_image(&h, 1).await;
    let reply = post_member(&h, &id, &member(OWNER), OTHER).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.message());
    let body = reply.json();
    assert_eq!(body["status"], "pending");
    assert_eq!(body["member_id"], OTHER);
    assert_eq!(body["image_id"], id.as_str());
    assert_eq!(body["schema"], "/v2/schemas/member");
    // Pending: visible by id, not in the default list; in the pending list.
    let get = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{id}"),
            &member(OTHER),
            b"",
        )
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert!(list_ids(&h, &member(OTHER), "").await.is_empty());
    assert_eq!(
        list_ids(&h, &member(OTHER), "?member_status=pending").await,
        vec![id.clone()]
    );
    // The owner may not answer for the member.
    let owner_accepts = put_status(&h, &id, &member(OWNER), OTHER, "accepted").await;
    assert_eq!(owner_accepts.status, StatusCode::FORBIDDEN);
    let accepted = put_status(&h, &id, &member(OTHER), OTHER, "accepted").await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.message());
    assert_eq!(accepted.json()["status"], "accepted");
    assert_eq!(list_ids(&h, &member(OTHER), "").await, vec![id.clone()]);
    assert_eq!(
        list_ids(&h, &member(OTHER), "?visibility=shared").await,
        vec![id.clone()]
    );
    assert!(list_ids(&h, &member(OTHER), "?member_status=pending")
        .await
        .is_empty());
    assert!(list_ids(&h, &member(THIRD), "?visibility=shared")
        .await
        .is_empty());
    let bad = h
        .call_as(
            Method::GET,
            "/v2/images?member_status=maybe",
            &member(OTHER),
            b"",
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // The member list: the owner sees every member, a member only itself.
    post_member(&h, &id, &member(OWNER), THIRD).await;
    let path = format!("/v2/images/{id}/members");
    let all = h.call_as(Method::GET, &path, &member(OWNER), b"").await;
    assert_eq!(all.json()["members"].as_array().unwrap().len(), 2);
    assert_eq!(all.json()["schema"], "/v2/schemas/members");
    let own = h.call_as(Method::GET, &path, &member(OTHER), b"").await;
    let own: Vec<Value> = own.json()["members"].as_array().unwrap().clone();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["member_id"], OTHER);
    let peek = h
        .call_as(Method::GET, &format!("{path}/{THIRD}"), &member(OTHER), b"")
        .await;
    assert_eq!(peek.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_members_member_reads_and_downloads_but_cannot_change() {
    let h = Harness::new();
    let id = shared_image(&h, 2).await;
    post_member(&h, &id, &member(OWNER), OTHER).await;
    let file = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{id}/file"),
            &member(OTHER),
            b"",
        )
        .await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(&file.body[..], b"data");
    let mut headers = member(OTHER);
    headers.push((
        "content-type",
        "application/openstack-images-v2.1-json-patch",
    ));
    let patch = h
        .call_as(
            Method::PATCH,
            &format!("/v2/images/{id}"),
            &headers,
            br#"[{"op":"replace","path":"/name","value":"mine"}]"#,
        )
        .await;
    assert_eq!(patch.status, StatusCode::FORBIDDEN, "{}", patch.message());
    let delete = h
        .call_as(
            Method::DELETE,
            &format!("/v2/images/{id}"),
            &member(OTHER),
            b"",
        )
        .await;
    assert_eq!(delete.status, StatusCode::FORBIDDEN);
    let share_on = post_member(&h, &id, &member(OTHER), THIRD).await;
    assert_eq!(share_on.status, StatusCode::FORBIDDEN);
    // A project that is not a member does not see it at all.
    let stranger = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{id}/file"),
            &member(THIRD),
            b"",
        )
        .await;
    assert_eq!(stranger.status, StatusCode::NOT_FOUND);
    // Removing the member takes the image away from it.
    let removed = h
        .call_as(
            Method::DELETE,
            &format!("/v2/images/{id}/members/{OTHER}"),
            &member(OWNER),
            b"",
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let gone = h
        .call_as(
            Method::GET,
            &format!("/v2/images/{id}"),
            &member(OTHER),
            b"",
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn test_members_refusals_as_glance() {
    let h = Harness::with_config(|c| c.image_member_quota = 1);
    let id = shared_image(&h, 3).await;
    let mut private = image_record(&uuid_n(4), OWNER, "private", 4, 1_700_000_000);
    private.visibility = "private".into();
    h.insert_image(&private, None).await;
    let not_shared = post_member(&h, &private.id, &member(OWNER), OTHER).await;
    assert_eq!(not_shared.status, StatusCode::FORBIDDEN);
    assert!(
        not_shared
            .message()
            .contains("Only shared images have members."),
        "{}",
        not_shared.message()
    );
    assert_eq!(
        post_member(&h, &id, &member(OWNER), OTHER).await.status,
        StatusCode::OK
    );
    let dup = post_member(&h, &id, &member(OWNER), OTHER).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let over = post_member(&h, &id, &member(OWNER), THIRD).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    let bad = put_status(&h, &id, &member(OTHER), OTHER, "maybe").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let empty = post_member(&h, &id, &member(OWNER), "").await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    // Deleting the image deletes its members.
    let deleted = h
        .call_as(Method::DELETE, &format!("/v2/images/{id}"), &admin(), b"")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(h.meta().member_images(OTHER).await.unwrap().is_empty());
}

#[tokio::test]
async fn test_info_stores_and_usage_have_glance_shapes() {
    let h = Harness::with_config(|c| {
        c.quotas.image_count_total = crate::quota::Limit::of(5);
    });
    shared_image(&h, 5).await;
    let stores = h
        .call_as(Method::GET, "/v2/info/stores", &member(OWNER), b"")
        .await;
    assert_eq!(stores.status, StatusCode::OK);
    let stores = stores.json();
    assert_eq!(stores["stores"][0]["id"], "local");
    assert_eq!(stores["stores"][0]["default"], "true");
    let usage = h
        .call_as(Method::GET, "/v2/info/usage", &member(OWNER), b"")
        .await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.message());
    let usage = usage.json();
    assert_eq!(
        usage["usage"]["image_count_total"],
        json!({"limit": 5, "usage": 1})
    );
    assert_eq!(usage["usage"]["image_size_total"]["usage"], 1);
    assert_eq!(usage["usage"]["image_stage_total"]["limit"], -1);
    assert_eq!(usage["usage"]["image_count_uploading"]["usage"], 0);
    for name in ["member", "members"] {
        let schema = h
            .call_as(
                Method::GET,
                &format!("/v2/schemas/{name}"),
                &member(OWNER),
                b"",
            )
            .await;
        assert_eq!(schema.status, StatusCode::OK);
        assert_eq!(schema.json()["name"], name);
    }
}

#[tokio::test]
async fn test_members_shared_images_page_in_order_with_own_images() {
    let h = Harness::new();
    // Two images shared with OTHER (created at t=1 and t=3) and one of OTHER's own (t=2).
    for (n, at) in [(11, 1), (13, 3)] {
        let id = uuid_n(n);
        h.insert_image(&image_record(&id, OWNER, "shared", 4, at), None)
            .await;
        post_member(&h, &id, &member(OWNER), OTHER).await;
        put_status(&h, &id, &member(OTHER), OTHER, "accepted").await;
    }
    h.insert_image(&image_record(&uuid_n(12), OTHER, "own", 4, 2), None)
        .await;
    let mut seen = Vec::new();
    let mut query = "?limit=1".to_owned();
    for _ in 0..4 {
        let page = list_ids(&h, &member(OTHER), &query).await;
        let Some(last) = page.last() else { break };
        query = format!("?limit=1&marker={last}");
        seen.extend(page);
    }
    assert_eq!(seen, [uuid_n(13), uuid_n(12), uuid_n(11)]);
    assert_eq!(
        list_ids(&h, &member(OTHER), "?sort=name:asc").await,
        [uuid_n(12), uuid_n(13), uuid_n(11)]
    );
}
