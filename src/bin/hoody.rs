use clap::Parser;

fn main() {
    let cli = hoodyd::client::Cli::parse();
    if let Err(f) = hoodyd::client::run(cli) {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
