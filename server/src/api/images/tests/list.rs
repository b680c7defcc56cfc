//! `GET /v2/images`: sorting, paging, filters, visibility.

use http::{Method, StatusCode};

use crate::api::testing::{image_record, member, uuid_n, Harness, ADMIN_PROJECT};

use super::ids;

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
        h.insert_image(&image, None).await;
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
async fn timed_images() -> Harness {
    let h = Harness::new();
    for n in 1..=3u32 {
        let created = 1_795_541_299 + i64::from(n);
        let mut image = image_record(&uuid_n(n), ADMIN_PROJECT, "t", 1, created);
        if n == 1 {
            image.updated_at = 1_795_541_400;
        }
        h.insert_image(&image, None).await;
    }
    h
}

#[tokio::test]
async fn test_list_images_time_filters_each_operator() {
    let h = timed_images().await;
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
    let h = timed_images().await;
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
        h.insert_image(&image, None).await;
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
