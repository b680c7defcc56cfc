//! The `sluice` service and command-line tool.
//!
//! Subcommands live in [`cli`]; `sluice inspect` runs the streaming format inspector over a
//! file or standard input.

#![forbid(unsafe_code)]

pub mod cli;
