//! The `otools` binary: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use otools_host::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Run(c) => c.execute(),
        Command::Check(c) => c.execute(),
        Command::Inspect(c) => c.execute(),
    };
    ExitCode::from(code)
}
