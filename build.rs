//! Compiles the management and demo protocols with protox (pure Rust: no `protoc`),
//! and writes one file descriptor set of the public Spectrum protocols for gRPC reflection
//! (replication is internal to the cluster: the balancer refuses it and nodes do not list it).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["spectrum/management.proto", "spectrum/demo.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("spectrum_descriptor.bin"), fds.encode_to_vec())?;
    // The demo's download chunks share one buffer instead of copying it per message.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".spectrum.demo.v1.Chunk.data")
        .compile_fds(fds)?;
    Ok(())
}
