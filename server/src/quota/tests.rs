use super::*;

fn limits(size_mib: i64, count: i64, uploading: i64) -> ProjectLimits {
    ProjectLimits {
        image_size_total: Limit::try_from(size_mib).unwrap(),
        image_count_total: Limit::try_from(count).unwrap(),
        image_count_uploading: Limit::try_from(uploading).unwrap(),
        image_stage_total: Limit::UNLIMITED,
        tasks_waiting: Limit::UNLIMITED,
    }
}

fn usage(images: u64, image_bytes: u64) -> ProjectUsage {
    ProjectUsage {
        images,
        image_bytes,
    }
}

#[test]
fn test_quota_messages_are_oslo_limits_and_glances() {
    let over = check_create(
        "p1",
        &limits(-1, 1, -1),
        &usage(1, 5),
        &InFlight::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(
        over.to_string(),
        "Project p1 is over a limit for [Resource image_count_total is over limit of 1 due \
         to current usage 1 and delta 1]"
    );
    assert!(over.glance_message().starts_with(
        "The request returned a 413 Request Entity Too Large. This generally means that \
         rate limiting or a quota threshold was breached.\n\nThe response body:\nProject p1"
    ));
}

#[test]
fn test_quota_create_counts_imports_in_flight_and_lists_every_resource_over() {
    let in_flight = InFlight {
        waiting: 2,
        running: 1,
        charged: 3 * MIB,
        committed: 0,
    };
    let over = check_create("p", &limits(4, 5, 3), &usage(2, 2 * MIB), &in_flight, 3)
        .unwrap_err()
        .over;
    let names: Vec<&str> = over.iter().map(|o| o.resource).collect();
    assert_eq!(
        names,
        [
            "image_count_total",
            "image_count_uploading",
            "image_size_total"
        ]
    );
    assert_eq!((over[0].usage, over[0].delta), (5, 1));
    assert_eq!((over[1].usage, over[1].delta), (3, 1));
    assert_eq!((over[2].limit, over[2].usage, over[2].delta), (4, 5, 0));
    assert!(check_create("p", &limits(5, 6, 4), &usage(2, 2 * MIB), &in_flight, 3).is_ok());
    // Imports into existing images (web-download, uploads) make no image.
    assert!(check_create("p", &limits(5, 3, 4), &usage(2, 2 * MIB), &in_flight, 0).is_ok());
}

#[test]
fn test_quota_size_is_exact_in_bytes_and_shown_in_mib_rounded_up() {
    let mut e = Enforcer::default();
    e.bytes(Limit::of(1), MIB, 0);
    assert!(e.finish("p").is_ok(), "at the limit is not over it");
    let mut e = Enforcer::default();
    e.bytes(Limit::of(1), MIB / 2, MIB / 2 + 1);
    let over = e.finish("p").unwrap_err().over;
    assert_eq!((over[0].usage, over[0].delta), (1, 1));
    let mut e = Enforcer::default();
    e.bytes(Limit::of(1024), 0, 1 << 40);
    assert_eq!(e.finish("p").unwrap_err().over[0].delta, 1 << 20);
    let mut e = Enforcer::default();
    e.bytes(Limit::UNLIMITED, u64::MAX, u64::MAX);
    assert!(e.finish("p").is_ok());
}

#[test]
fn test_quota_start_counts_the_import_itself_once() {
    // The import asking is one of the running ones; its own charge is left out.
    let others = InFlight {
        waiting: 5,
        running: 2,
        charged: MIB,
        committed: 0,
    };
    assert!(check_start("p", &limits(2, 3, 1), &usage(1, MIB), &others, Some(1)).is_ok());
    let over = check_start("p", &limits(1, 2, 1), &usage(1, MIB), &others, Some(1))
        .unwrap_err()
        .over;
    let names: Vec<&str> = over.iter().map(|o| o.resource).collect();
    assert_eq!(names, ["image_count_total", "image_size_total"]);
    // An import into an existing image adds no image.
    let over = check_start("p", &limits(1, 2, 1), &usage(1, MIB), &others, None)
        .unwrap_err()
        .over;
    let names: Vec<&str> = over.iter().map(|o| o.resource).collect();
    assert_eq!(names, ["image_size_total"]);
}

#[tokio::test]
async fn test_quota_project_usage_counts_only_the_owners_images() {
    use crate::meta::{memory::MemoryMeta, sample_image, MetaStore};
    let meta = MemoryMeta::default();
    for (id, owner, size) in [("a", "p1", 10), ("b", "p2", 20), ("c", "p1", 30)] {
        let mut image = sample_image(id);
        image.owner = owner.to_owned();
        image.size = Some(size);
        meta.put_image(&image).await.unwrap();
    }
    assert_eq!(meta.project_usage("p1").await.unwrap(), usage(2, 40));
    assert_eq!(meta.project_usage("p3").await.unwrap(), usage(0, 0));
}

#[test]
fn test_quota_overrides_replace_defaults_per_key() {
    let quotas: Quotas = toml::from_str(
        "image_count_total = 10\nimage_stage_total = 3\n\
         [projects.\"p1\"]\nimage_count_total = -1\nimage_size_total = 5\n\
         image_stage_total = -1\n",
    )
    .unwrap();
    let p1 = quotas.for_project("p1");
    assert_eq!(p1.image_count_total, Limit::UNLIMITED);
    assert_eq!(p1.image_size_total, Limit::of(5));
    assert_eq!(p1.image_stage_total, Limit::UNLIMITED);
    assert_eq!(quotas.for_project("p2").image_stage_total, Limit::of(3));
    assert_eq!(p1.tasks_waiting, Limit::of(DEFAULT_TASKS_WAITING));
    let p2 = quotas.for_project("p2");
    assert_eq!(p2.image_count_total, Limit::of(10));
    assert_eq!(p2.image_size_total, Limit::UNLIMITED);
    assert!(toml::from_str::<Quotas>("image_count_total = -2\n").is_err());
    assert!(toml::from_str::<Quotas>("image_count_totl = 1\n").is_err());
    assert_eq!("-1".parse::<Limit>(), Ok(Limit::UNLIMITED));
    assert_eq!("7".parse::<Limit>(), Ok(Limit::of(7)));
    assert!("x".parse::<Limit>().is_err());
}
