//! Compiles the `.proto` files with protox, a pure-Rust protobuf compiler, so that a fresh machine
//! needs nothing but cargo (no system `protoc`).

use std::error::Error;

const PROTOS: &[&str] = &["directory/v1/directory.proto", "events/v1/events.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    // tonic-prost-build 0.14 does not print these itself; without them every build reruns us.
    println!("cargo:rerun-if-changed=proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed=proto/{proto}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
