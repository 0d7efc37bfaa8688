//! Generates the gRPC server and client for `vpr.control.v1` from the shared
//! proto directory, with `protox` so that no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/vpr/control/v1/control.proto";
    println!("cargo:rerun-if-changed={proto}");

    let descriptors = protox::compile([proto], ["../../proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
