//! Code generated from `proto/slotd/v1` by build.rs, and the descriptor set served by reflection.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("slotd.v1");

/// The encoded `FileDescriptorSet` of every slotd proto (with imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/slotd_descriptor.bin"));
