//! Sparse stored images: a raw import's all-zero 4 KiB blocks are holes in the stored file;
//! the digests are of the full stream.

use std::os::unix::fs::MetadataExt;

use super::harness::{digest, import_input, FileServer, Server};
use crate::common::{read, scratch, write_pattern};

#[test]
fn test_import_raw_stores_zero_blocks_as_holes_with_digests_unchanged() {
    let dir = scratch();
    let src = dir.path().join("disk.raw");
    std::fs::write(&src, vec![0u8; 32 << 20]).unwrap();
    for i in 0..8u64 {
        write_pattern(&src, i * (4 << 20), 1 << 20);
    }
    let files = FileServer::start(dir.path());
    let server = Server::start(&[]);
    let task = server.create_task(import_input(&files.url("disk.raw"), "raw", "sparse"));
    let done = server.wait_task(task["id"].as_str().unwrap());
    assert_eq!(done["status"], "success", "{done}");
    let id = done["result"]["image_id"].as_str().unwrap();
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["checksum"], digest("md5sum", &src));
    assert_eq!(image["os_hash_value"], digest("sha512sum", &src));
    let stored = server.files_under("images");
    assert_eq!(stored.len(), 1);
    assert!(read(&stored[0]) == read(&src));
    let used = std::fs::metadata(&stored[0]).unwrap().blocks() * 512;
    assert!(
        used <= (9 << 20),
        "{used} bytes allocated for 8 MiB of data"
    );
}
