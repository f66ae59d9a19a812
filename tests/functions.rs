//! The Redis Functions library through the real binary (issue #16): slotd loads its versioned
//! library, every operation is an FCALL (no EVALSHA), a flushed library is loaded again by the
//! next call, and `slotd redis prune-functions` deletes the versions no replica uses, on a
//! single Redis and on every primary of a Redis Cluster.

use crate::support;

use std::process::Command;

use slotd::api::pb::booking_service_client::BookingServiceClient;
use support::flow::{connect, open, real_date, register};
use support::process::Slotd;
use support::redis::{wait_until, RedisServer};
use support::*;

/// A library of an "older build": one function, named like slotd's (`slotd_<12 hex>_<op>`).
fn old_library(version: &str) -> String {
    format!(
        "#!lua name=slotd_{version}\n\
         redis.register_function('slotd_{version}_book', function(keys, args) return 1 end)\n"
    )
}

fn libraries(conn: &mut ::redis::Connection) -> Vec<String> {
    let list: ::redis::Value = ::redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("slotd_*")
        .query(conn)
        .expect("function list");
    let ::redis::Value::Array(libs) = list else {
        panic!("FUNCTION LIST answered {list:?}");
    };
    libs.iter()
        .filter_map(|lib| match lib {
            ::redis::Value::Array(fields) => fields.chunks(2).find_map(|pair| match pair {
                [::redis::Value::BulkString(k), ::redis::Value::BulkString(v)]
                    if k.as_slice() == b"library_name" =>
                {
                    Some(String::from_utf8_lossy(v).into_owned())
                }
                _ => None,
            }),
            _ => None,
        })
        .collect()
}

fn prune(url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(["redis", "prune-functions", "--redis-url", url])
        .env_remove("SLOTD_CONFIG")
        .env_remove("SLOTD_REDIS_URL")
        .output()
        .expect("run slotd redis prune-functions");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "prune-functions failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn book(channel: &tonic::transport::Channel, date: &str, i: u32) {
    BookingServiceClient::new(channel.clone())
        .book_appointment(book_request(
            &format!("fn-book-{i}"),
            slot(date, "08:00"),
            vec![applicant(i)],
        ))
        .await
        .unwrap_or_else(|s| panic!("booking {i}: {s:?}"));
}

/// Done-when of #16: `FUNCTION LIST` shows the slotd library and `INFO commandstats` after a
/// booking run shows FCALL and no EVALSHA; FUNCTION FLUSH under the running slotd does not stop
/// the next booking; prune deletes an unused old version and keeps marked and own ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slotd_calls_its_versioned_library_with_fcall_reloads_it_and_prunes_old_versions() {
    let redis = RedisServer::start();
    let process = Slotd::start(0, &redis.url());
    let channel = connect(&process.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 10).await;
    register(&channel, 1..=6).await;
    for i in 1..=3 {
        book(&channel, &date, i).await;
    }

    let mut conn = redis.client();
    let loaded = libraries(&mut conn);
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    let ours = loaded[0].clone();
    assert!(
        ours.starts_with("slotd_") && ours.len() == "slotd_".len() + 12,
        "{ours}"
    );
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("info");
    assert!(stats.contains("cmdstat_fcall:"), "{stats}");
    assert!(!stats.contains("cmdstat_evalsha"), "{stats}");
    assert!(!stats.contains("cmdstat_eval:"), "{stats}");
    // The running replica marks its version in use.
    let marked: bool = ::redis::cmd("EXISTS")
        .arg(format!("slotd:functions:in-use:{ours}"))
        .query(&mut conn)
        .expect("exists");
    assert!(marked);

    // A flushed (or replaced) primary: the next booking loads the library again.
    let _: () = ::redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut conn)
        .expect("flush");
    // (The room's ticker may call first: either way the library is back.)
    book(&channel, &date, 4).await;
    assert_eq!(libraries(&mut conn), vec![ours.clone()]);

    // Two older versions side by side (a rolling upgrade): one still marked by a replica.
    for version in ["000000000000", "111111111111"] {
        let _: String = ::redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(old_library(version))
            .query(&mut conn)
            .expect("load old version");
    }
    let _: () = ::redis::cmd("SET")
        .arg("slotd:functions:in-use:slotd_111111111111")
        .arg("0.0.9")
        .arg("EX")
        .arg(60)
        .query(&mut conn)
        .expect("mark");
    let said = prune(&redis.url());
    assert!(said.contains("deleted slotd_000000000000"), "{said}");
    assert!(said.contains("kept slotd_111111111111 (in use)"), "{said}");
    assert!(
        said.contains(&format!("kept {ours} (this build)")),
        "{said}"
    );
    let mut left = libraries(&mut conn);
    left.sort();
    let mut want = vec![ours.clone(), "slotd_111111111111".to_owned()];
    want.sort();
    assert_eq!(left, want);
    // Its mark lapsed: the next prune deletes it too.
    let _: () = ::redis::cmd("DEL")
        .arg("slotd:functions:in-use:slotd_111111111111")
        .query(&mut conn)
        .expect("del");
    assert!(prune(&redis.url()).contains("deleted slotd_111111111111"));
    assert_eq!(libraries(&mut conn), vec![ours]);
    book(&channel, &date, 5).await;
    let stats: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .expect("info");
    assert!(!stats.contains("cmdstat_evalsha"), "{stats}");
}

/// The ports of a `redis-cluster://` URL's nodes that are primaries now.
fn primaries(url: &str) -> Vec<u16> {
    let nodes = url.trim_start_matches("redis-cluster://");
    nodes
        .split(',')
        .filter_map(|n| n.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .filter(|port| {
            let mut c = ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .expect("url")
                .get_connection()
                .expect("node");
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query(&mut c)
                .expect("info");
            info.contains("role:master")
        })
        .collect()
}

fn node(port: u16) -> ::redis::Connection {
    ::redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .expect("url")
        .get_connection()
        .expect("node")
}

/// On a Redis Cluster slotd loads the library on every primary, and prune deletes an unused
/// version from every primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_library_is_on_every_primary_and_prune_clears_every_primary() {
    let url = support::cluster::shared_url().to_owned();
    let tag = support::redis::fresh_tag();
    let process = Slotd::start_with(0, &url, &["--redis-tag", tag.as_str()]);
    let channel = connect(&process.addr()).await;
    let date = real_date(7);
    open(&channel, &date, "08:00", "08:00", 10).await;
    register(&channel, 1..=2).await;
    book(&channel, &date, 1).await;
    let primaries = primaries(&url);
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    // Loaded at start (the health loop) on every primary, whichever shard the tag lives on.
    wait_until("the library on every primary", 30, || {
        primaries.iter().all(|p| {
            libraries(&mut node(*p))
                .iter()
                .any(|l| l.starts_with("slotd_"))
        })
    });
    let version = "222222222222";
    for p in &primaries {
        let _: String = ::redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(old_library(version))
            .query(&mut node(*p))
            .expect("load old version");
    }
    let said = prune(&url);
    assert!(said.contains(&format!("deleted slotd_{version}")), "{said}");
    assert!(said.contains("(this build)"), "{said}");
    for p in &primaries {
        let left = libraries(&mut node(*p));
        assert!(!left.contains(&format!("slotd_{version}")), "{p}: {left:?}");
        assert!(
            left.iter().any(|l| l.starts_with("slotd_")),
            "{p}: {left:?}"
        );
    }
    book(&channel, &date, 2).await;
}

/// Without a Redis URL the command says which key it needs, and changes nothing.
#[test]
fn prune_functions_without_a_redis_url_names_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(["redis", "prune-functions"])
        .env_remove("SLOTD_CONFIG")
        .env_remove("SLOTD_REDIS_URL")
        .env_remove("SLOTD__REDIS__URL")
        .output()
        .expect("run slotd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis.url"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_slotd"))
        .args(["redis", "prune-functions", "--redis-url", "http://nope:1"])
        .output()
        .expect("run slotd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redis.url") && stderr.contains("must start with"),
        "{stderr}"
    );
}
