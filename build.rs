//! Compiles the management and demo protocols with protox (pure Rust: no `protoc`),
//! and writes one file descriptor set of every Spectrum protocol for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=spectrum-replication/proto");
    let fds = protox::compile(
        ["spectrum/management.proto", "spectrum/demo.proto", "replication.proto"],
        ["proto", "spectrum-replication/proto"],
    )?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("spectrum_descriptor.bin"), fds.encode_to_vec())?;
    let mut ours = fds.clone();
    ours.file.retain(|f| f.package() != "spectrum.replication.v1");
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(ours)?;
    Ok(())
}
