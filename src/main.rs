//! The `wgquant` command line: quantize, dequantize and inspect safetensors checkpoints, and a
//! demo. Library errors become one-line messages and a non-zero exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgquant: error: {e}");
            ExitCode::FAILURE
        }
    }
}
