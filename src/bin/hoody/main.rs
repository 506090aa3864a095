//! `hoody`, the command-line client of the HTTP API: its own binary with its
//! own HTTP client, apart from the engine library it only reads paths from.

mod client;

use clap::Parser;

fn main() {
    // Printing into a closed pipe (`hoody ... | head`) ends the process
    // quietly, as other command-line tools do, instead of a panic.
    // SAFETY: setting a signal's disposition to the default, before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = client::Cli::parse();
    if let Err(f) = client::run(cli) {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
