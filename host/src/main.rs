//! The `otools` binary: parse the command line, run the command, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use otools_host::cli::{Cli, Command};

/// Removes the loader's private folder when `main` returns or unwinds.
struct PrivateDirCleanup;

impl Drop for PrivateDirCleanup {
    fn drop(&mut self) {
        otools_host::plugin::loader::remove_private_dir();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _cleanup = PrivateDirCleanup;
    let code = match &cli.command {
        Command::Run(c) => c.execute(),
        Command::Check(c) => c.execute(),
        Command::Inspect(c) => c.execute(),
        Command::Status(c) => c.execute(),
        Command::Send(c) => c.execute(),
        Command::Raise(c) => c.execute(),
        Command::Stop(c) => c.execute(),
    };
    ExitCode::from(code)
}
