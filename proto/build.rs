//! Compiles `strata/v1/*.proto` with protox (pure Rust), so building Strata
//! never needs a system `protoc`.
//!
//! Two code generations share one descriptor set:
//! - `client/`: ordinary prost messages plus tonic clients, for any Rust user;
//! - `server/`: tonic servers only. Messages resolve to the client types,
//!   except the fetch-side responses, which map to hand-written types in
//!   `crate::raw` that splice stored record bytes straight into the reply
//!   (same wire encoding, no decode/re-encode of stored batches).
use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] =
    &["strata/v1/broker.proto", "strata/v1/admin.proto", "strata/v1/groups.proto", "strata/v1/errors.proto"];

const HEALTH_PROTO: &str = "grpc/health/v1/health.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["."])?;
    fs::write(out.join("strata_descriptor.bin"), fds.encode_to_vec())?;

    let client_dir = out.join("client");
    let server_dir = out.join("server");
    fs::create_dir_all(&client_dir)?;
    fs::create_dir_all(&server_dir)?;

    tonic_prost_build::configure()
        .build_server(false)
        .bytes(".")
        // Requests are encoded into a buffer of their size (see codec.rs).
        .codec_path("crate::codec::StrataCodec")
        .out_dir(&client_dir)
        .compile_fds(fds.clone())?;

    tonic_prost_build::configure()
        .build_client(false)
        // Malformed requests are INVALID_ARGUMENT; produce requests are bounded before decoding.
        .codec_path("crate::codec::StrataCodec")
        .extern_path(".strata.v1", "crate::v1")
        .extern_path(".strata.v1.FetchResponse", "crate::raw::FetchResponse")
        .extern_path(".strata.v1.SubscribeResponse", "crate::raw::SubscribeResponse")
        .out_dir(&server_dir)
        .compile_fds(fds)?;

    // grpc.health.v1, server side only, with the same codec.
    println!("cargo:rerun-if-changed={HEALTH_PROTO}");
    let health_dir = out.join("health");
    fs::create_dir_all(&health_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::codec::StrataCodec")
        .out_dir(&health_dir)
        .compile_fds(protox::compile([HEALTH_PROTO], ["."])?)?;
    Ok(())
}
