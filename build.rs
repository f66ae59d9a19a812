//! Generates the gRPC code and the reflection descriptor set from `proto/` with protox, a
//! pure-Rust protobuf compiler, so a fresh machine builds without a system `protoc`.

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "slotd/v1/common.proto",
    "slotd/v1/calendar.proto",
    "slotd/v1/booking.proto",
    "slotd/v1/admin.proto",
    "slotd/v1/waiting_room.proto",
    // For reflection only (grpcurl prints error details with it); Rust types come from tonic-types.
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    // tonic-prost-build prints no rerun-if-changed lines of its own (grpc-rust#2511).
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let mut compiler = protox::Compiler::new([root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("slotd_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .extern_path(".google.rpc", "::tonic_types")
        // Small first encode buffers: one per open stream (src/api/codec.rs).
        .codec_path("crate::api::codec::SlotdCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
