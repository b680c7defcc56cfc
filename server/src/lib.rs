//! The `sluice` service and command-line tool.
//!
//! Subcommands live in [`cli`]: `sluice serve` runs the Glance v2 compatible import service
//! ([`service`]), `sluice inspect` runs the streaming format inspector over a file or stdin.

#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod config;
pub mod executor;
#[doc(hidden)]
pub mod fuzzing;
pub mod imports;
pub mod meta;
pub mod observe;
pub mod properties;
pub mod quota;
pub mod service;
pub mod staging;
pub mod state;
pub mod takeover;
pub mod unwrapping;
