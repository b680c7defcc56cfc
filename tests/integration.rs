//! One integration-test binary (links once): real images made by real tools at test time,
//! inspected in-process and through the real `sluice` binary.

mod common;
mod convert;
mod inspect;
mod service;
