//! The `sluice` binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    sluice_server::cli::main()
}
