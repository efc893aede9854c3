//! `host` command-line tool.

fn main() {
    println!("host {}", env!("CARGO_PKG_VERSION"));
}
