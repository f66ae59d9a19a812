//! The key layout marker and its migration through the real binary (issue #17 item 4): a
//! slotd of this version starting on data of the previous key layout (1: a manifest sorted set
//! per day) refuses to start and says to run `slotd redis migrate`; the migration deletes the
//! manifests (layout 2 lists the active index) and marks the layout; slotd then serves the
//! same appointments, in order. An empty deployment is marked at the first start, an unknown
//! marker is refused.

use crate::support;

use std::process::Command;

use slotd::api::pb::booking_service_client::BookingServiceClient;
use support::flow::{connect, open, real_date, register};
use support::process::Slotd;
use support::redis::RedisServer;
use support::*;

const MARKER: &str = "slotd:{slotd}:layout";

fn slotd_redis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_slotd"))
        .arg("redis")
        .args(args)
        .env_remove("SLOTD_CONFIG")
        .env_remove("SLOTD_REDIS_URL")
        .output()
        .expect("run slotd redis")
}

fn get(conn: &mut ::redis::Connection, key: &str) -> Option<String> {
    ::redis::cmd("GET").arg(key).query(conn).expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_one_data_is_refused_until_migrated_then_served_in_order() {
    let redis = RedisServer::start();
    let mut conn = redis.client();
    let date = real_date(7);
    // Two appointments booked by this version, on an empty deployment: marked at the start.
    let mut process = Slotd::start(0, &redis.url());
    assert_eq!(get(&mut conn, MARKER).as_deref(), Some("2"));
    let channel = connect(&process.addr()).await;
    open(&channel, &date, "08:00", "08:15", 5).await;
    register(&channel, 1..=3).await;
    let mut confirmations = Vec::new();
    for (i, time) in [(1, "08:15"), (2, "08:00")] {
        let booked = BookingServiceClient::new(channel.clone())
            .book_appointment(book_request(
                &format!("layout-{i}"),
                slot(&date, time),
                vec![applicant(i)],
            ))
            .await
            .expect("book")
            .into_inner();
        confirmations.push((
            time,
            booked.appointment.expect("appointment").confirmation_number,
        ));
    }
    process.kill();
    drop(channel);

    // What layout 1 would have held: the day's manifest sorted set (one member "<MMMM>-<CONF>"
    // per booking), bare passport claims "<CONF>" with the receipt's `backing` = "<CONF>", a
    // lapsed hold claim left in a third receipt's `backing`, and no marker.
    let manifest_key = format!("slotd:{{slotd}}:manifest:BEIJING:ALL_OTHERS:{date}");
    for (i, (time, conf)) in confirmations.iter().enumerate() {
        let _: () = ::redis::cmd("SET")
            .arg(format!("slotd:{{slotd}}:passport:P{:07}", i + 1))
            .arg(conf)
            .query(&mut conn)
            .expect("SET");
        let _: i64 = ::redis::cmd("HSET")
            .arg(format!("slotd:{{slotd}}:receipt:R{:07}", i + 1))
            .arg("backing")
            .arg(conf)
            .query(&mut conn)
            .expect("HSET");
        let minutes = if *time == "08:00" { "0480" } else { "0495" };
        let _: i64 = ::redis::cmd("ZADD")
            .arg(&manifest_key)
            .arg(0)
            .arg(format!("{minutes}-{conf}"))
            .query(&mut conn)
            .expect("ZADD");
    }
    let _: i64 = ::redis::cmd("HSET")
        .arg("slotd:{slotd}:receipt:R0000003")
        .arg("backing")
        .arg(format!("hold:{}:1", "ab".repeat(16)))
        .query(&mut conn)
        .expect("HSET");
    let _: i64 = ::redis::cmd("DEL")
        .arg(MARKER)
        .query(&mut conn)
        .expect("DEL");

    let said = Slotd::refused(&redis.url(), &[]);
    assert!(
        said.contains("key layout 1") && said.contains("slotd redis migrate"),
        "{said}"
    );
    assert_eq!(get(&mut conn, MARKER), None, "a refusal writes nothing");

    let out = slotd_redis(&["migrate", "--redis-url", &redis.url()]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 layout-1 manifest keys deleted, 2 receipt claims moved"),
        "{stdout}"
    );
    for i in 1..=2usize {
        assert_eq!(
            get(&mut conn, &format!("slotd:{{slotd}}:passport:P{i:07}")),
            Some(format!("{}|R{i:07}", confirmations[i - 1].1))
        );
    }
    for i in 1..=3 {
        let backing: Option<String> = ::redis::cmd("HGET")
            .arg(format!("slotd:{{slotd}}:receipt:R{i:07}"))
            .arg("backing")
            .query(&mut conn)
            .expect("HGET");
        assert_eq!(backing, None, "receipt {i}");
    }
    let left: i64 = ::redis::cmd("EXISTS")
        .arg(&manifest_key)
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(left, 0);
    assert_eq!(get(&mut conn, MARKER).as_deref(), Some("2"));
    // Idempotent: a second run deletes nothing.
    let again = slotd_redis(&["migrate", "--redis-url", &redis.url()]);
    assert!(String::from_utf8_lossy(&again.stdout)
        .contains(" 0 layout-1 manifest keys deleted, 0 receipt"));

    // Served as before: the manifest (now the active index, sorted when read) in time order.
    let process = Slotd::start(0, &redis.url());
    let channel = connect(&process.addr()).await;
    let listed: Vec<String> = support::history::manifest(&channel, &date)
        .await
        .into_iter()
        .map(|a| a.confirmation_number)
        .collect();
    assert_eq!(
        listed,
        vec![confirmations[1].1.clone(), confirmations[0].1.clone()]
    );
    // The moved claims still guard the receipts: applicant 1's receipt is in use, and
    // applicant 3 (whose receipt held only a lapsed layout-1 hold claim) books.
    let mut booking = BookingServiceClient::new(channel.clone());
    let refused = booking
        .book_appointment(book_request(
            "layout-again",
            slot(&date, "08:00"),
            vec![applicant(1)],
        ))
        .await
        .expect_err("receipt in use");
    assert_eq!(reason(&refused), "RECEIPT_IN_USE", "{refused:?}");
    booking
        .book_appointment(book_request(
            "layout-3",
            slot(&date, "08:00"),
            vec![applicant(3)],
        ))
        .await
        .expect("applicant 3 books");
    drop(process);

    // A marker this build does not know (a newer layout): refused, the data left alone.
    let _: () = ::redis::cmd("SET")
        .arg(MARKER)
        .arg("9")
        .query(&mut conn)
        .expect("SET");
    let said = Slotd::refused(&redis.url(), &[]);
    assert!(said.contains("key layout 9"), "{said}");
    let out = slotd_redis(&["migrate", "--redis-url", &redis.url()]);
    assert!(!out.status.success());
    assert_eq!(get(&mut conn, MARKER).as_deref(), Some("9"));
}
