//! Seeds a data directory's metadata store with many tasks, for `benches/list_bench.py`.
//!
//! ```sh
//! cargo run --release -p sluice-server --example seed_tasks -- DATA_DIR COUNT [BIG_EVERY]
//! ```
//!
//! Writes `COUNT` finished import tasks of project `p-bulk` (about 0.6 KB each; every
//! `BIG_EVERY`-th, default 100, carries 60 KB of `image_properties`, the size in issue #9's
//! report) and 10 of project `p-small`, with creation times one second apart. Records go
//! straight into RocksDB in unsynced batches of 1,000, without index entries or the index
//! version key: seeding through the API (an fsync per task) would take many minutes, and the
//! server then builds the indexes on its first start, as for a store written before they
//! existed.

use std::path::PathBuf;
use std::process::ExitCode;

use rocksdb::{WriteBatch, DB};
use serde_json::{json, Map, Value};
use sluice_server::meta::codec;
use sluice_server::meta::keys::Table;
use sluice_server::meta::{TaskRecord, TaskStatus};

/// Records per unsynced write batch.
const BATCH: u32 = 1000;

/// Bytes of properties of a big task (issue #9: "10,000 tasks (60 KB of properties each)").
const BIG_PROPERTIES: usize = 60 << 10;

fn task(n: u32, owner: &str, big: bool) -> TaskRecord {
    let id = format!("{n:08x}-5eed-4000-8000-{:012x}", u64::from(n) * 7919);
    let mut properties: Map<String, Value> = Map::new();
    properties.insert("name".into(), json!(format!("ubuntu-24.04-server-{n}")));
    properties.insert("disk_format".into(), json!("qcow2"));
    properties.insert("container_format".into(), json!("bare"));
    properties.insert("os_distro".into(), json!("ubuntu"));
    properties.insert("hw_disk_bus".into(), json!("virtio"));
    if big {
        for p in 0..BIG_PROPERTIES / 512 {
            properties.insert(format!("x_property_{p:03}"), json!("v".repeat(496)));
        }
    }
    let created = 1_700_000_000 + i64::from(n);
    TaskRecord {
        id,
        task_type: "import".into(),
        status: TaskStatus::Success,
        input: json!({
            "import_from": format!("https://images.example.org/releases/{n}/disk.qcow2"),
            "import_from_format": "qcow2",
            "image_properties": properties,
        }),
        result: Some(json!({ "image_id": format!("{n:08x}-1111-4000-8000-000000000000") })),
        owner: owner.into(),
        message: String::new(),
        reason: None,
        created_at: created,
        updated_at: created + 30,
        // Far in the future: nothing expires during a benchmark.
        expires_at: Some(4_000_000_000),
        request_id: Some(format!("req-{n:08x}-0000-4000-8000-000000000000")),
        user_id: Some("bench-user".into()),
        lease: None,
        attempts: 0,
        pinned_node: None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(dir), Some(Ok(count))) = (args.first(), args.get(1).map(|c| c.parse::<u32>())) else {
        eprintln!("usage: seed_tasks DATA_DIR COUNT [BIG_EVERY]");
        return ExitCode::from(2);
    };
    let big_every: u32 = args
        .get(2)
        .and_then(|b| b.parse().ok())
        .unwrap_or(100)
        .max(1);
    let db = match DB::open_default(PathBuf::from(dir).join("meta")) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("opening {dir}/meta: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tasks = (0..count)
        .map(|n| task(n, "p-bulk", n % big_every == big_every - 1))
        .chain((0..10).map(|n| task(count + n, "p-small", false)));
    let mut batch = WriteBatch::default();
    let mut pending = 0;
    for task in tasks {
        match codec::encode(&task) {
            Ok(value) => batch.put(Table::Tasks.key(&task.id), value),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
        pending += 1;
        if pending == BATCH {
            if let Err(e) = db.write(std::mem::take(&mut batch)) {
                eprintln!("writing: {e}");
                return ExitCode::FAILURE;
            }
            pending = 0;
        }
    }
    if let Err(e) = db.write(batch).and_then(|()| db.flush()) {
        eprintln!("writing: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
