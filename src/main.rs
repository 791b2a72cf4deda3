//! The onramp binary: parse, run, exit. All work is in the library.

use clap::Parser;

fn main() {
    let code = match onramp::cli::Cli::try_parse() {
        Ok(cli) => onramp::cli::run(cli),
        Err(e) => onramp::cli::usage_error(e),
    };
    std::process::exit(code);
}
