//! End-to-end tests of `sluice serve`: the real binary, a local HTTP file server for images
//! made by qemu-img, plain HTTP from Rust and the real OpenStack Python clients.

mod clients;
mod conversion;
mod crash;
mod create_errors;
mod deploy;
mod diskfull;
mod harness;
mod hostile;
mod images_create;
mod imports;
mod interop;
mod interop_quotas;
mod isolation;
mod keystone;
mod lifecycle;
mod listing;
mod observe;
mod ova;
mod policy;
mod progress;
mod quota_counts;
mod quotas;
mod rejections;
mod s3;
mod sharing;
mod sparse;
mod ssrf;
mod stage;
mod stage_quota;
mod unwrap;
mod upload;
mod upload_clients;
mod upload_stops;
