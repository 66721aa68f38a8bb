//! The `diffir` command; all logic lives in the library (`diffir::cli`).

fn main() {
    std::process::exit(diffir::cli::run());
}
