//! The integration tests: ONE test binary (`[[test]] integration` in Cargo.toml, `autotests =
//! false`), each suite a module of it (`tests/<suite>.rs`), all sharing one build of
//! tests/support/ and one link. One process also means one shared redis-server and one shared
//! Redis Cluster for every test that can share them (tests/support/redis.rs, cluster.rs; each
//! test in its own `redis.tag`), and process-wide state (the metrics registry, the tracing
//! subscriber, the environment) shared by every suite: tests read metrics as deltas, start the
//! real binary for anything that installs a subscriber, and never set environment variables.
//!
//! One suite: `cargo test --test integration conformance::`; one backend of it:
//! `cargo test --test integration conformance::redis::` (README, Testing).

#[macro_use]
mod support;

mod admission;
mod admission_keys;
mod availability;
mod booking_api;
mod browser;
mod calendar_cache;
mod cluster_migration;
mod conformance;
mod faults;
mod functions;
mod fuzz;
mod hostile;
mod layout;
mod lifecycle_api;
mod limits;
mod model;
mod observability;
mod operations;
mod processes;
mod redis_cluster;
mod redis_connect;
mod redis_replication;
mod redis_store;
mod redis_storm;
mod security;
mod sold_out;
mod streams;
mod telemetry;
mod waiting_room;
mod waiting_room_batch;
mod waitlist_api;
mod web;

/// With `autotests = false` a file in tests/ that no `mod` line above names would never be
/// compiled, and its tests would silently not run: every one must be a module here.
#[test]
fn every_suite_in_tests_is_a_module_of_this_binary() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let main = std::fs::read_to_string(dir.join("main.rs")).expect("tests/main.rs");
    let declared: Vec<&str> = main
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let suite = if path.is_dir() {
            // A directory is a suite's submodules (tests/conformance/), data (tests/corpus/), or
            // the harness; one with a main.rs would be a test binary of its own.
            path.join("main.rs").exists()
        } else {
            path.extension().is_some_and(|e| e == "rs") && name != "main"
        };
        if suite && !declared.contains(&name) {
            missing.push(path.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "not part of the test binary (add `mod <name>;` to tests/main.rs): {missing:?}"
    );
}
