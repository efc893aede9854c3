//! The device daemon. The field loop (serial protocol, inbox, LED/button) arrives with the I/O work;
//! for now it reports its version and the learner's build configuration.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("firmware {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    println!("firmware {}: on-device continual learner (run with --version)", env!("CARGO_PKG_VERSION"));
}
