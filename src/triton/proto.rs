//! The generated Triton / KServe v2 gRPC messages and client (proto/inference.proto, compiled by build.rs).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("inference");

/// The compiled descriptor set of proto/inference.proto, for checking it against Triton's own descriptors.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
