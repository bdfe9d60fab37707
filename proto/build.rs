//! Compiles `proto/stampede/v1/*.proto` with protox (pure Rust, so no `protoc` binary is
//! needed on any machine) and hands the descriptors to tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/stampede/v1/target.proto",
        "proto/stampede/v1/coordinator.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
