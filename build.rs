//! Compiles proto/inference.proto (the Triton / KServe v2 gRPC subset) with protox, a pure-Rust protobuf
//! compiler, so the build needs no protoc. The descriptor set is kept too, for the compatibility test.
//! Without the `triton` feature there is no client, and nothing to compile.

#[cfg(not(feature = "triton"))]
fn main() {}

#[cfg(feature = "triton")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/inference.proto");
    let fds = protox::compile(["proto/inference.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("inference_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
