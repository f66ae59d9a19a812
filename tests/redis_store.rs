//! What only the Redis backend has: script reloading, the documented key schema, durability
//! across a crash, tag separation, and corrupt data that must not panic. Needs `redis-server`.

use crate::support;

use std::sync::Arc;

use chrono::Duration;

use slotd::domain::rules::{Booking, Cancellation, DateRange, OpenPlan};
use slotd::domain::types::{
    CategoryId, ConfirmationNumber, DayRef, PostId, RequestId, SlotRef, SlotTime,
};
use slotd::store::redis::{ConnOptions, RedisOptions};
use slotd::store::{Inventory, StoreError};
use support::redis::RedisServer;

use support::domain::applicant;
use support::epoch;

fn day() -> DayRef {
    DayRef {
        post: PostId::parse("BEIJING").unwrap(),
        category: CategoryId::parse("ALL_OTHERS").unwrap(),
        date: (epoch() + Duration::days(1)).date_naive(),
    }
}

fn slot(time: &str) -> SlotRef {
    day().at(SlotTime::parse(time).unwrap())
}

fn plan(seats: u32) -> OpenPlan {
    support::domain::plan(
        DateRange::new(day().date, day().date).unwrap(),
        "08:00",
        "08:15",
        seats,
    )
}

async fn register(store: &Arc<dyn Inventory>, i: u32) {
    support::domain::register(store.as_ref(), i).await;
}

fn booking(request_id: &str, time: &str, ids: &[u32]) -> Booking {
    Booking::new(
        RequestId::parse(request_id).unwrap(),
        slot(time),
        ids.iter().map(|i| applicant(*i)).collect(),
    )
    .unwrap()
}

async fn booked(store: &Arc<dyn Inventory>, time: &str) -> u32 {
    store
        .slots(
            &day().post,
            &day().category,
            DateRange::new(day().date, day().date).unwrap(),
        )
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.slot == slot(time))
        .map(|s| s.booked)
        .unwrap()
}

async fn assert_audit_clean(store: &Arc<dyn Inventory>) {
    let report = store
        .audit(
            &day().post,
            &day().category,
            DateRange::new(day().date, day().date).unwrap(),
        )
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

#[tokio::test]
async fn a_flushed_functions_library_is_reloaded_on_the_next_booking() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(4), epoch()).await.unwrap();
    register(&store, 1).await;
    register(&store, 2).await;
    store
        .book(
            &booking("b1", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();

    let _: () = redis::cmd("FUNCTION")
        .arg("FLUSH")
        .query(&mut redis.client())
        .unwrap();
    store
        .book(
            &booking("b2", "08:00", &[2]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .expect("FCALL loads the library again after \"Function not found\"");
    assert_eq!(booked(&store, "08:00").await, 2);
}

/// The documented key patterns (docs/redis-keys.md), without the `slotd:{slotd}:` prefix.
fn documented(rest: &str) -> bool {
    let parts: Vec<&str> = rest.split(':').collect();
    let ident = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    let date = |s: &str| slotd::domain::types::parse_date(s).is_ok();
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    match parts.as_slice() {
        ["day" | "active" | "cancelled", post, category, d] => {
            ident(post) && ident(category) && date(d)
        }
        ["receipt", n] | ["passport", n] => alnum(n),
        ["appt", c] => ConfirmationNumber::parse(c).is_ok(),
        ["idem", "book" | "cancel", rid] => RequestId::parse(rid).is_ok(),
        ["events"] | ["days-due"] | ["appt-expire"] | ["backfill"] | ["layout"] => true,
        _ => false,
    }
}

#[tokio::test]
async fn every_key_is_documented_and_carries_the_hash_tag() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(4), epoch()).await.unwrap();
    for i in 1..=3 {
        register(&store, i).await;
    }
    let a = store
        .book(
            &booking("b1", "08:00", &[1, 2]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    store
        .book(
            &booking("b2", "08:15", &[3]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    store
        .cancel(
            &Cancellation {
                request_id: RequestId::parse("c1").unwrap(),
                confirmation: a.confirmation.clone(),
                passport: applicant(1).passport,
                admission: None,
            },
            epoch(),
        )
        .await
        .unwrap();
    store
        .close_slots(&day(), Some(SlotTime::parse("08:15").unwrap()))
        .await
        .unwrap();
    store
        .set_capacity(&slot("08:00"), 6, epoch())
        .await
        .unwrap();

    let mut con = redis.client();
    // What `redis-cli --scan` shows.
    let keys: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .clone()
        .iter(&mut con)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(keys.len() >= 10, "{keys:?}");
    for key in &keys {
        let rest = key
            .strip_prefix("slotd:{slotd}:")
            .unwrap_or_else(|| panic!("{key} lacks the slotd:{{slotd}}: prefix"));
        assert!(documented(rest), "{key} is not a documented key");
    }
    for kind in [
        "day",
        "active",
        "receipt",
        "passport",
        "appt",
        "idem:book",
        "idem:cancel",
        "events",
    ] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("slotd:{{slotd}}:{kind}:")) || k.ends_with(kind)),
            "no {kind} key in {keys:?}"
        );
    }
    // Idempotency records expire on their own.
    let ttl: i64 = redis::cmd("TTL")
        .arg("slotd:{slotd}:idem:book:b1")
        .query(&mut con)
        .unwrap();
    assert!(
        ttl > 0 && ttl <= slotd::store::IDEMPOTENCY_TTL_SECS,
        "{ttl}"
    );
    // Every mutation appended its event.
    let events: usize = redis::cmd("XLEN")
        .arg("slotd:{slotd}:events")
        .query(&mut con)
        .unwrap();
    assert_eq!(events, 1 + 3 + 2 + 1 + 1 + 1);
}

#[tokio::test]
async fn acknowledged_bookings_survive_a_kill_and_restart() {
    let mut redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(4), epoch()).await.unwrap();
    register(&store, 1).await;
    register(&store, 2).await;
    let a = store
        .book(
            &booking("b1", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();

    redis.stop();
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable { .. })
    ));
    redis.restart();

    // The same store object reconnects by itself.
    let mut answered = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(answered, "store reconnects after the restart");
    assert_eq!(
        store
            .appointment(&a.confirmation, &applicant(1).passport)
            .await
            .unwrap(),
        a
    );
    assert_eq!(booked(&store, "08:00").await, 1);
    store
        .book(
            &booking("b2", "08:00", &[2]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    assert_eq!(booked(&store, "08:00").await, 2);
    assert_audit_clean(&store).await;
}

#[tokio::test]
async fn deployments_with_different_tags_share_a_redis_without_seeing_each_other() {
    let redis = RedisServer::start();
    let with_tag = |tag: &str| -> Arc<dyn Inventory> {
        redis.store_with(RedisOptions {
            conn: ConnOptions {
                url: redis.url(),
                ..ConnOptions::default()
            },
            tag: tag.into(),
        })
    };
    let a = with_tag("blue");
    let b = with_tag("green");
    a.open_slots(&plan(4), epoch()).await.unwrap();
    let range = DateRange::new(day().date, day().date).unwrap();
    assert_eq!(
        a.slots(&day().post, &day().category, range)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(b
        .slots(&day().post, &day().category, range)
        .await
        .unwrap()
        .is_empty());
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.client())
        .unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("slotd:{blue}:")),
        "{keys:?}"
    );
    assert!(slotd::store::redis::RedisStore::connect(&RedisOptions {
        tag: "no{braces}".into(),
        ..RedisOptions::default()
    })
    .is_err());
}

#[tokio::test]
async fn unreadable_stored_data_is_corrupt_not_a_panic() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    let conf = ConfirmationNumber::generate();
    let mut con = redis.client();
    let _: () = redis::cmd("HSET")
        .arg(format!("slotd:{{slotd}}:appt:{conf}"))
        .arg("status")
        .arg("MAYBE")
        .query(&mut con)
        .unwrap();
    assert!(matches!(
        store.appointment(&conf, &applicant(1).passport).await,
        Err(StoreError::Corrupt { .. })
    ));
    let _: () = redis::cmd("SET")
        .arg(format!(
            "slotd:{{slotd}}:day:BEIJING:ALL_OTHERS:{}",
            slotd::domain::types::format_date(day().date)
        ))
        .arg("not a hash")
        .query(&mut con)
        .unwrap();
    let range = DateRange::new(day().date, day().date).unwrap();
    assert!(matches!(
        store.slots(&day().post, &day().category, range).await,
        Err(StoreError::Corrupt { .. })
    ));
}

/// Cancel is compare-and-set (issue #20): it frees a passport record (layout 2: "<CONF>|<RECEIPT>",
/// which guards the receipt too) only while it still names the appointment being cancelled. The state here is the one the
/// pre-fix confirm_hold.lua left after two replicas with skewed clocks (one passport, two BOOKED
/// appointments): the claims name the other appointment. Before the fix, cancelling the first
/// deleted them and freed the passport for a third booking.
#[tokio::test]
async fn cancelling_frees_only_the_claims_that_still_name_the_appointment() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(5), epoch()).await.unwrap();
    register(&store, 1).await;
    let first = store
        .book(
            &booking("cas-first", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let other = format!("{}|R0000001", ConfirmationNumber::generate());
    let passport_key = "slotd:{slotd}:passport:P0000001";
    let mut con = redis.client();
    let _: () = redis::cmd("SET")
        .arg(passport_key)
        .arg(&other)
        .query(&mut con)
        .unwrap();

    store
        .cancel(
            &Cancellation {
                request_id: RequestId::parse("cas-cancel").unwrap(),
                confirmation: first.confirmation.clone(),
                passport: applicant(1).passport,
                admission: None,
            },
            epoch(),
        )
        .await
        .unwrap();
    let passport: Option<String> = redis::cmd("GET").arg(passport_key).query(&mut con).unwrap();
    assert_eq!(passport.as_deref(), Some(other.as_str()));
    let third = store
        .book(
            &booking("cas-third", "08:15", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await;
    assert!(
        matches!(
            third,
            Err(StoreError::Domain(
                slotd::domain::Error::ReceiptInUse { .. }
                    | slotd::domain::Error::ApplicantAlreadyBooked { .. }
            ))
        ),
        "{third:?}"
    );
}

/// Keys without a TTL (persistent), and keys of one kind (`appt:`), on the test server.
fn key_census(con: &mut redis::Connection) -> (usize, usize) {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(con).unwrap();
    let mut persistent = 0;
    let mut appts = 0;
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(k).query(con).unwrap();
        if ttl == -1 {
            persistent += 1;
        }
        if k.contains(":appt:") {
            appts += 1;
        }
    }
    (persistent, appts)
}

/// #20 bounded data: a book/cancel loop of 500 on one day leaves the day's manifest and active
/// index empty (cancelled members move to the day's cancelled index), the persistent key count
/// and the manifest's `MEMORY USAGE` flat, and every cancelled record with a TTL of the
/// retention; once the retention has passed the records and the cancelled index are gone and
/// the key count is back where it started. Before, each iteration added a manifest member and
/// a persistent `appt:` hash.
#[tokio::test]
async fn a_book_cancel_loop_keeps_redis_memory_and_the_manifest_flat() {
    let redis = RedisServer::start();
    let retention_ms = 1500;
    let store: Arc<dyn Inventory> = Arc::new(
        slotd::store::redis::RedisStore::connect(&RedisOptions {
            conn: ConnOptions {
                url: redis.url(),
                ..ConnOptions::default()
            },
            ..RedisOptions::default()
        })
        .unwrap()
        .with_retention(Duration::milliseconds(retention_ms)),
    );
    store.open_slots(&plan(2), epoch()).await.unwrap();
    register(&store, 1).await;
    let mut con = redis.client();
    let manifest_key = "slotd:{slotd}:manifest:BEIJING:ALL_OTHERS:2030-01-08";
    let active_key = "slotd:{slotd}:active:BEIJING:ALL_OTHERS:2030-01-08";
    let cancelled_key = "slotd:{slotd}:cancelled:BEIJING:ALL_OTHERS:2030-01-08";
    let (before, _) = key_census(&mut con);
    let mut checkpoints = Vec::new();
    for n in 0..500u32 {
        let a = store
            .book(
                &booking(&format!("loop-b{n}"), "08:00", &[1]),
                &ConfirmationNumber::generate(),
                epoch(),
            )
            .await
            .unwrap();
        store
            .cancel(
                &Cancellation {
                    request_id: RequestId::parse(&format!("loop-c{n}")).unwrap(),
                    confirmation: a.confirmation.clone(),
                    passport: applicant(1).passport,
                    admission: None,
                },
                epoch(),
            )
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("slotd:{{slotd}}:appt:{}", a.confirmation))
            .query(&mut con)
            .unwrap();
        assert!(ttl > 0 && ttl <= retention_ms, "cancelled record TTL {ttl}");
        if n == 49 || n == 499 {
            let card: u64 = redis::cmd("ZCARD")
                .arg(manifest_key)
                .query(&mut con)
                .unwrap();
            let active: u64 = redis::cmd("HLEN").arg(active_key).query(&mut con).unwrap();
            let usage: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(manifest_key)
                .query(&mut con)
                .unwrap();
            let (persistent, _) = key_census(&mut con);
            checkpoints.push((card, active, usage, persistent));
        }
    }
    assert_eq!(
        checkpoints[0], checkpoints[1],
        "flat from 50 to 500 iterations"
    );
    assert_eq!((checkpoints[1].0, checkpoints[1].1), (0, 0));
    let cancelled_ttl: i64 = redis::cmd("PTTL")
        .arg(cancelled_key)
        .query(&mut con)
        .unwrap();
    assert!(cancelled_ttl > 0 && cancelled_ttl <= retention_ms);
    // The persistent keys: what the loop's first booking created, no more (the passport and
    // the events stream already exist or come and go; the idempotency records carry a TTL).
    assert!(
        checkpoints[1].3 <= before + 4,
        "{before} persistent keys before, {} after",
        checkpoints[1].3
    );
    // Past the retention: the records and the cancelled index are gone (Redis expires them).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, appts) = key_census(&mut con);
        let exists: u64 = redis::cmd("EXISTS")
            .arg(cancelled_key)
            .query(&mut con)
            .unwrap();
        if appts == 0 && exists == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{appts} records still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Listing with cancelled ones skips the expired records it may still meet.
    let page = store
        .manifest(&slotd::domain::rules::ManifestQuery {
            day: day(),
            after: None,
            limit: 10,
            include_cancelled: true,
        })
        .await
        .unwrap();
    assert!(page.appointments.is_empty());
}

/// #20 bounded data, past appointments on Redis: the sweep frees a passport only while its
/// record still names the appointment (here one names another appointment, as the pre-#20
/// double booking could leave), leaves the receipt spent, deletes the past day's active index
/// and manifest and its `days-due` member, and gives the record a TTL; once the retention has
/// passed by slotd's clock the record and its `appt-expire` member are gone. Before, the past
/// day's keys and the passport claims stayed for ever.
#[tokio::test]
async fn a_past_day_leaves_no_index_key_and_frees_only_the_claims_that_still_name_it() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(2), epoch()).await.unwrap();
    register(&store, 1).await;
    register(&store, 2).await;
    let first = store
        .book(
            &booking("past-1", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let second = store
        .book(
            &booking("past-2", "08:15", &[2]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let mut con = redis.client();
    let other = format!("{}|R0000001", ConfirmationNumber::generate());
    let _: () = redis::cmd("SET")
        .arg("slotd:{slotd}:passport:P0000001")
        .arg(&other)
        .query(&mut con)
        .unwrap();
    let label = "BEIJING:ALL_OTHERS:2030-01-08";
    let due = slotd::store::appointment_retire_at(day().date);
    let score: f64 = redis::cmd("ZSCORE")
        .arg("slotd:{slotd}:days-due")
        .arg(label)
        .query(&mut con)
        .unwrap();
    assert_eq!(score as i64, due.timestamp_millis());

    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 2);
    let get = |con: &mut redis::Connection, key: &str| -> Option<String> {
        redis::cmd("GET").arg(key).query(con).unwrap()
    };
    assert_eq!(
        get(&mut con, "slotd:{slotd}:passport:P0000001").as_deref(),
        Some(other.as_str()),
        "a claim naming another appointment is not freed"
    );
    assert_eq!(get(&mut con, "slotd:{slotd}:passport:P0000002"), None);
    let backing: Option<String> = redis::cmd("HGET")
        .arg("slotd:{slotd}:receipt:R0000002")
        .arg("backing")
        .query(&mut con)
        .unwrap();
    assert_eq!(backing.as_deref(), Some(second.confirmation.as_str()));
    // The next sweep sees the day empty and retires it.
    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 0);
    for kind in ["active", "manifest"] {
        let exists: u32 = redis::cmd("EXISTS")
            .arg(format!("slotd:{{slotd}}:{kind}:{label}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(exists, 0, "{kind} of the past day");
    }
    let due_days: u32 = redis::cmd("ZCARD")
        .arg("slotd:{slotd}:days-due")
        .query(&mut con)
        .unwrap();
    assert_eq!(due_days, 0);
    assert_eq!(booked(&store, "08:00").await, 0);
    assert_audit_clean(&store).await;
    let retention_ms = Duration::days(slotd::store::DEFAULT_RETENTION_DAYS).num_milliseconds();
    for a in [&first, &second] {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("slotd:{{slotd}}:appt:{}", a.confirmation))
            .query(&mut con)
            .unwrap();
        assert!(
            ttl > retention_ms && ttl <= retention_ms + 24 * 60 * 60 * 1000,
            "retired record TTL {ttl}"
        );
    }
    let forget_at = due + Duration::days(slotd::store::DEFAULT_RETENTION_DAYS);
    store.retire_past_appointments(forget_at).await.unwrap();
    let (_, appts) = key_census(&mut con);
    assert_eq!(appts, 0, "records forgotten after the retention");
    let expiring: u32 = redis::cmd("ZCARD")
        .arg("slotd:{slotd}:appt-expire")
        .query(&mut con)
        .unwrap();
    assert_eq!(expiring, 0);
}

/// #20 bounded data, data written before the due indexes existed: a day opened and a waitlist
/// entry joined before `days-due` / `wl-due` (simulated by removing their members) are found by
/// the sweep's one-time backfill pass (one bounded SCAN step per call, then `done`), so the past
/// appointment's passport is freed and the passed entry retired like any other. Before, neither
/// index ever named them: the passport stayed claimed and the entry waited for ever.
#[tokio::test]
async fn days_and_waitlist_entries_from_before_the_due_indexes_are_backfilled_and_retired() {
    use slotd::domain::waitlist::{EntryId, EntryStatus, WaitlistJoin};
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(2), epoch()).await.unwrap();
    register(&store, 1).await;
    register(&store, 2).await;
    store
        .book(
            &booking("legacy-b", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let id = EntryId::generate();
    let join = WaitlistJoin::new(
        RequestId::parse("legacy-w").unwrap(),
        day().post,
        day().category,
        DateRange::new(day().date, day().date).unwrap(),
        vec![],
        vec![applicant(2)],
    )
    .unwrap();
    store.join_waitlist(&join, &id, 2, epoch()).await.unwrap();
    let mut con = redis.client();
    // As written by a version without the indexes.
    for key in [
        "slotd:{slotd}:days-due",
        "slotd:{slotd}:wl-due",
        "slotd:{slotd}:backfill",
    ] {
        let _: () = redis::cmd("DEL").arg(key).query(&mut con).unwrap();
    }
    // Enough filler keys that the pass takes more than one step (one MSET: 3,000 SETs were
    // 3,000 fsyncs on this appendfsync-always server).
    let mut filler = redis::cmd("MSET");
    for i in 0..3000 {
        filler
            .arg(format!("slotd:{{slotd}}:idem:book:filler{i}"))
            .arg("x");
    }
    let _: () = filler.query(&mut con).unwrap();

    let due = slotd::store::appointment_retire_at(day().date);
    let mut retired = 0;
    let mut steps = 0;
    loop {
        retired += store.retire_past_appointments(due).await.unwrap();
        steps += 1;
        let done: Option<String> = redis::cmd("HGET")
            .arg("slotd:{slotd}:backfill")
            .arg("done")
            .query(&mut con)
            .unwrap();
        if done.is_some() {
            break;
        }
        assert!(steps < 100, "the backfill pass ends");
    }
    assert!(steps > 1, "one bounded SCAN step per call ({steps})");
    retired += store.retire_past_appointments(due).await.unwrap();
    assert_eq!(retired, 1, "the legacy day's appointment is retired");
    let claim: Option<String> = redis::cmd("GET")
        .arg("slotd:{slotd}:passport:P0000001")
        .query(&mut con)
        .unwrap();
    assert_eq!(claim, None);
    assert_eq!(store.retire_passed_waitlist(due).await.unwrap(), 1);
    assert_eq!(
        store.waitlist_entry(&id).await.unwrap().status,
        EntryStatus::Expired
    );
    // Done: later calls do not scan again (the cursor stays as it was).
    let before: Vec<String> = redis::cmd("HKEYS")
        .arg("slotd:{slotd}:backfill")
        .query(&mut con)
        .unwrap();
    store.retire_past_appointments(due).await.unwrap();
    let after: Vec<String> = redis::cmd("HKEYS")
        .arg("slotd:{slotd}:backfill")
        .query(&mut con)
        .unwrap();
    assert_eq!(before, after);
}

/// A Lua error names the real file and line (`book.lua:<n>`), not a line of the assembled
/// functions library: a day hash replaced by a string makes book.lua's `redis.call` raise
/// WRONGTYPE, and the error's place is the line of that call.
#[tokio::test]
async fn a_lua_error_names_the_operation_file_and_its_line() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(4), epoch()).await.unwrap();
    register(&store, 1).await;
    let mut con = redis.client();
    let days: Vec<String> = redis::cmd("KEYS")
        .arg("slotd:{slotd}:day:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(days.len(), 1, "{days:?}");
    let _: () = redis::cmd("DEL").arg(&days[0]).query(&mut con).unwrap();
    let _: () = redis::cmd("SET")
        .arg(&days[0])
        .arg("not a hash")
        .query(&mut con)
        .unwrap();
    let e = store
        .book(
            &booking("b1", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .expect_err("a string where the day hash should be");
    let StoreError::Corrupt { detail } = &e else {
        panic!("WRONGTYPE is corrupt data: {e:?}");
    };
    assert!(!detail.contains("user_function"), "{detail}");
    let place = detail
        .split("on @")
        .nth(1)
        .and_then(|rest| rest.split(['.', ' ']).next().map(|stem| (stem, rest)))
        .unwrap_or_else(|| panic!("no place in {detail}"));
    let (stem, rest) = place;
    assert_eq!(stem, "book", "{detail}");
    let line: usize = rest
        .trim_start_matches("book.lua:")
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line in {detail}"));
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/store/redis/lua/book.lua"
    ))
    .unwrap();
    let text = source.lines().nth(line - 1).unwrap_or_default();
    assert!(
        text.contains("redis.call") && text.contains("KEYS[1]"),
        "book.lua:{line} is `{text}` ({detail})"
    );
}

/// #17: a booking on a slot none of whose seats are held makes no holds scan (no
/// ZRANGEBYSCORE, and its only EXISTS is the new appointment number's), while an expired hold of
/// another slot of the date still leaves its seat free for that slot's own booking.
#[tokio::test]
async fn a_booking_on_a_slot_without_held_seats_skips_the_holds_scan() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(1), epoch()).await.unwrap();
    for i in 1..=3 {
        register(&store, i).await;
    }
    store
        .hold(
            &booking("h1", "08:15", &[1]),
            &slotd::domain::lifecycle::HoldId::generate(),
            epoch() + Duration::minutes(1),
            epoch(),
        )
        .await
        .unwrap();
    let later = epoch() + Duration::minutes(2);
    let mut conn = redis.client();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    store
        .book(
            &booking("b1", "08:00", &[2]),
            &ConfirmationNumber::generate(),
            later,
        )
        .await
        .unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    assert!(!stats.contains("cmdstat_zrangebyscore:"), "{stats}");
    assert!(stats.contains("cmdstat_exists:calls=1,"), "{stats}");
    // 08:15's one seat is under an expired hold: its own booking discounts and reclaims it.
    store
        .book(
            &booking("b2", "08:15", &[3]),
            &ConfirmationNumber::generate(),
            later,
        )
        .await
        .expect("the expired hold's seat is free");
    assert_eq!(booked(&store, "08:15").await, 1);
    assert_audit_clean(&store).await;
}

/// #17 layout 2: a confirmed booking writes no manifest member and no receipt field (its
/// passport records "<CONF>|<RECEIPT>" guard both rules), so a single-applicant booking makes
/// 11 commands (checks: GET, HMGET ×2, GET, EXISTS; writes: HINCRBY, SET, HSET ×2, SET, XADD)
/// and each added applicant 3 more (HMGET, GET, SET). The receipt is refused while the
/// claim uses it and free again after the cancel. Before: ZADD, and an HSET per applicant.
#[tokio::test]
async fn a_booking_writes_no_manifest_member_and_no_receipt_field() {
    let redis = RedisServer::start();
    let store: Arc<dyn Inventory> = redis.store();
    store.open_slots(&plan(4), epoch()).await.unwrap();
    for i in 1..=3 {
        register(&store, i).await;
    }
    let mut conn = redis.client();
    let calls = |conn: &mut redis::Connection| -> (u64, String) {
        let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
        let total = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_fcall:"))
            .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_config"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        (total, stats)
    };
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let one = store
        .book(
            &booking("lean-1", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let (single, stats) = calls(&mut conn);
    assert!(!stats.contains("cmdstat_zadd:"), "{stats}");
    assert!(stats.contains("cmdstat_hset:calls=2,"), "{stats}");
    assert_eq!(single, 11, "{stats}");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    store
        .book(
            &booking("lean-2", "08:15", &[2, 3]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let (pair, stats) = calls(&mut conn);
    assert_eq!(pair, single + 3, "{stats}");
    let record: Option<String> = redis::cmd("GET")
        .arg("slotd:{slotd}:passport:P0000001")
        .query(&mut conn)
        .unwrap();
    assert_eq!(record, Some(format!("{}|R0000001", one.confirmation)));
    let backing: Option<String> = redis::cmd("HGET")
        .arg("slotd:{slotd}:receipt:R0000001")
        .arg("backing")
        .query(&mut conn)
        .unwrap();
    assert_eq!(backing, None);
    let manifests: Vec<String> = redis::cmd("KEYS")
        .arg("slotd:{slotd}:manifest:*")
        .query(&mut conn)
        .unwrap();
    assert!(manifests.is_empty(), "{manifests:?}");
    // The one record guards the receipt: refused while booked, free after the cancel.
    let again = store
        .book(
            &booking("lean-3", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await;
    assert!(
        matches!(
            again,
            Err(StoreError::Domain(
                slotd::domain::Error::ReceiptInUse { .. }
            ))
        ),
        "{again:?}"
    );
    store
        .cancel(
            &Cancellation {
                request_id: RequestId::parse("lean-c").unwrap(),
                confirmation: one.confirmation.clone(),
                passport: applicant(1).passport,
                admission: None,
            },
            epoch(),
        )
        .await
        .unwrap();
    store
        .book(
            &booking("lean-4", "08:00", &[1]),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .expect("the receipt is free again");
    assert_audit_clean(&store).await;
}
