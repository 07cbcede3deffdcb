//! The `ferry` command line.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    ferry_connectors::link();
    cli::main()
}
