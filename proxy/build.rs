//! Compiles the Envoy protos shipped inside `envoy-types` into a descriptor set, so the
//! proxy can read and write Envoy's canonical JSON/YAML form of its resources (Envoy-format
//! config files, `/config_dump`) with `prost-reflect`. Pure Rust: no `protoc` needed.

use std::path::PathBuf;

use prost::Message;

/// The root files; their imports come along.
const FILES: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/admin/v3/config_dump.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/path/match/uri_template/v3/uri_template_match.proto",
    "envoy/extensions/load_balancing_policies/least_request/v3/least_request.proto",
    "envoy/extensions/load_balancing_policies/ring_hash/v3/ring_hash.proto",
    "envoy/extensions/load_balancing_policies/round_robin/v3/round_robin.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/config/trace/v3/opentelemetry.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
];

const INCLUDES: &[&str] = &[
    "data-plane-api",
    "xds",
    "protoc-gen-validate",
    "googleapis",
    "cel-spec",
    "opentelemetry-proto",
    "client_model",
    "ratelimit",
];

fn main() {
    let root = envoy_types_proto_dir();
    let includes: Vec<PathBuf> = INCLUDES.iter().map(|d| root.join(d)).collect();
    let mut compiler = protox::Compiler::new(&includes).unwrap_or_else(|e| panic!("protox: {e}"));
    compiler.include_imports(true).include_source_info(false);
    for f in FILES {
        compiler
            .open_file(f)
            .unwrap_or_else(|e| panic!("compiling {f}: {e}"));
    }
    let set = compiler.file_descriptor_set();
    let out = PathBuf::from(env("OUT_DIR"));
    std::fs::write(out.join("envoy_descriptors.bin"), set.encode_to_vec())
        .unwrap_or_else(|e| panic!("writing descriptor set: {e}"));
    println!("cargo:rerun-if-changed=build.rs");
}

/// Finds `envoy-types`' `proto/` folder in cargo's registry: the version comes from the
/// workspace's `Cargo.lock`, the registry from `CARGO_HOME` (default `~/.cargo`).
/// (`cargo metadata` would also know, but it wants every platform's dependencies
/// downloaded, which an offline build does not have.)
fn envoy_types_proto_dir() -> PathBuf {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let lock_path = manifest.join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock_path.display());
    let lock =
        std::fs::read_to_string(&lock_path).unwrap_or_else(|e| panic!("reading Cargo.lock: {e}"));
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_owned())
        .unwrap_or_else(|| panic!("envoy-types is not in Cargo.lock"));
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env("HOME")).join(".cargo"));
    let src = home.join("registry/src");
    let entries = std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    for index in entries.flatten() {
        let dir = index.path().join(format!("envoy-types-{version}/proto"));
        if dir.is_dir() {
            return dir;
        }
    }
    panic!(
        "envoy-types-{version}/proto not found under {}",
        src.display()
    );
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}
