//! End-to-end tests of `sluice serve`: the real binary, a local HTTP file server for images
//! made by qemu-img, plain HTTP from Rust and the real OpenStack Python clients.

mod clients;
mod conversion;
mod create_errors;
mod diskfull;
mod harness;
mod images_create;
mod imports;
mod interop;
mod interop_quotas;
mod isolation;
mod lifecycle;
mod listing;
mod ova;
mod policy;
mod quotas;
mod rejections;
mod sparse;
mod ssrf;
mod stage;
mod unwrap;
mod upload;
mod upload_clients;
mod upload_stops;
