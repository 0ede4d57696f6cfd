//! `sd`: Stable Diffusion 1.5 from the command line.
//!
//! ```text
//! sd generate --prompt "a lighthouse at dusk" [--model PATH] [--steps 20 --cfg 7.5 --seed 42 …]
//! sd info image.png
//! sd tokenize "a lighthouse at dusk" [--json] [--plain-prompt]
//! sd bench [--backend cpu] [--runs 3]
//! sd lora extract --base A --tuned B --rank 32 -o out.safetensors
//! sd lora resize IN --rank 8 -o out.safetensors
//! sd serve [--model PATH | --models-dir DIR] [--listen 127.0.0.1:7860] [--api-auth USER:PASS]
//! ```
//!
//! Every failure is one line on stderr and a non-zero exit code; nothing panics with a trace.

mod backend;
mod bench;
mod cli;
mod generate;
mod hires;
mod info;
mod lora;
mod progress;
#[cfg(feature = "server")]
mod serve;
mod stdout;
mod tokenize;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // A bug must still read as one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("sd: internal error{place}: {}", one_line(&message));
    }));

    let cli = Cli::parse();
    if let Some(notice) = sd_core::cpu::threads::cap_global_pool() {
        eprintln!("sd: {notice}");
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Info(args) => info::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Lora(args) => lora::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if stdout::is_closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sd: error: {}", one_line(&error.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Messages stay on one line (a config path or prompt may hold newlines); other whitespace is
/// kept as it is, since a quoted name (`Euler  a`) must read back as given.
fn one_line(message: &str) -> String {
    message.replace("\r\n", " ").replace(['\n', '\r'], " ")
}
