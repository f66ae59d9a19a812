//! #20 item 9, cluster safety: the booking tag's slot moves between two primaries
//! (`CLUSTER SETSLOT … IMPORTING` / `MIGRATING`, `MIGRATE` in small batches, `SETSLOT … NODE`)
//! in the middle of a storm of bookings, cancellations, short holds reclaimed by a sweeper,
//! capacity raises and waitlist offers (the offer step touches keys its script builds itself).
//! Scripts refuse with TRYAGAIN while the slot is moving (`cluster_guard.lua`; slotd answers
//! UNAVAILABLE and the callers retry with the same request_id). Afterwards: no call ever failed
//! with Redis' "non local key" script error (a script aborted after its writes), the audit is
//! clean, every slot has seats = capacity - booked - held, every acknowledged booking is there,
//! and the new primary owns the slot. Own cluster (tests/support/cluster.rs), bounded in time.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, Utc};

use slotd::domain::lifecycle::HoldId;
use slotd::domain::rules::{Booking, Cancellation, DateRange, OpenPlan};
use slotd::domain::types::{
    AppointmentStatus, CategoryId, ConfirmationNumber, DayRef, PostId, RequestId, SlotRef, SlotTime,
};
use slotd::domain::waitlist::{EntryId, WaitlistJoin};
use slotd::store::{Inventory, StoreError};
use support::cluster::{key_slot, RedisCluster};
use support::domain::{applicant, every_weekday, receipt};

const TIMES: [&str; 4] = ["08:00", "08:15", "08:30", "08:45"];
const SEATS: u32 = 3;
const WORKERS: u32 = 6;
const PER_WORKER: u32 = 30;
const WAITERS: u32 = 12;

fn day() -> DayRef {
    DayRef {
        post: PostId::parse("BEIJING").unwrap(),
        category: CategoryId::parse("ALL_OTHERS").unwrap(),
        date: (Utc::now() + Duration::days(5)).date_naive(),
    }
}

fn slot(i: u32) -> SlotRef {
    day().at(SlotTime::parse(TIMES[i as usize % TIMES.len()]).unwrap())
}

fn booking(request_id: &str, s: SlotRef, i: u32) -> Booking {
    Booking::new(RequestId::parse(request_id).unwrap(), s, vec![applicant(i)]).unwrap()
}

/// What the storm saw: calls that failed with a script aborted mid-way, other final errors.
#[derive(Default)]
struct Seen {
    aborted: Vec<String>,
    refused_while_moving: u32,
}

/// Runs `call` until it answers something other than UNAVAILABLE (the slot moving, or a
/// redirect being followed), for up to 60 s. A "non local key" error is recorded: that is a
/// script that failed after it may have written.
async fn retried<T, F, Fut>(seen: &Mutex<Seen>, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        match call().await {
            Err(StoreError::Unavailable { detail }) if Instant::now() < deadline => {
                {
                    let mut s = seen.lock().unwrap();
                    if detail.contains("non local key") || detail.contains("Script attempted") {
                        s.aborted.push(detail);
                    } else if detail.contains("migrating") {
                        s.refused_while_moving += 1;
                    }
                }
                tokio::time::sleep(StdDuration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

fn node(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(StdDuration::from_secs(2))
        .unwrap()
}

/// Moves `slot` from `source` to `target` as `redis-cli --cluster reshard` does, a few keys per
/// MIGRATE with a pause between batches so the storm runs against every stage of it. Returns
/// how many keys moved.
fn migrate_slot(
    cluster: &RedisCluster,
    slot: u16,
    source: (u16, &str),
    target: (u16, &str),
) -> u32 {
    let mut src = node(source.0);
    let mut dst = node(target.0);
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(source.1)
        .query(&mut dst)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(target.1)
        .query(&mut src)
        .unwrap();
    let mut moved = 0;
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(4)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the migration ends");
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(target.0)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
        moved += keys.len() as u32;
        std::thread::sleep(StdDuration::from_millis(15));
    }
    // The target first, then the source, then the others (as redis-cli --cluster does).
    let mut primaries: Vec<_> = cluster.nodes().into_iter().filter(|n| n.primary).collect();
    primaries.sort_by_key(|n| (n.port != target.0, n.port != source.0));
    for n in primaries {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(target.1)
            .query(&mut node(n.port))
            .unwrap();
    }
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moving_the_booking_slot_mid_storm_fails_no_script_after_a_write_and_loses_nothing() {
    let cluster = Arc::new(RedisCluster::start());
    let store: Arc<dyn Inventory> = cluster.store();
    let now = Utc::now;
    store
        .open_slots(
            &OpenPlan {
                post: day().post,
                category: day().category,
                range: DateRange::new(day().date, day().date).unwrap(),
                weekdays: every_weekday(),
                first: SlotTime::parse(TIMES[0]).unwrap(),
                last: SlotTime::parse(TIMES[TIMES.len() - 1]).unwrap(),
                seats: SEATS,
            },
            now(),
        )
        .await
        .unwrap();
    let waiters = 1000..1000 + WAITERS;
    for i in (1..=WORKERS * PER_WORKER).chain(waiters.clone()) {
        store
            .register_receipt(&receipt(i, now() - Duration::days(1)))
            .await
            .unwrap();
    }
    // Waiting entries, so every release of seats runs the offer step.
    for i in waiters {
        let join = WaitlistJoin::new(
            RequestId::parse(&format!("w{i}")).unwrap(),
            day().post,
            day().category,
            DateRange::new(day().date, day().date).unwrap(),
            vec![],
            vec![applicant(i)],
        )
        .unwrap();
        store
            .join_waitlist(&join, &EntryId::generate(), 2, now())
            .await
            .unwrap();
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU32::new(0));
    let booked: Arc<Mutex<Vec<(u32, ConfirmationNumber)>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (store, seen, stop, ops, booked) = (
            store.clone(),
            seen.clone(),
            stop.clone(),
            ops.clone(),
            booked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < PER_WORKER * 4 {
                let i = w * PER_WORKER + 1 + n % PER_WORKER;
                let s = slot(n + w);
                n += 1;
                ops.fetch_add(1, Ordering::Relaxed);
                match n % 4 {
                    // A short hold: it expires and the sweeper's reclaim offers its seats.
                    0 => {
                        let request = booking(&format!("h{w}-{n}"), s, i);
                        let id = HoldId::generate();
                        let _ = retried(&seen, || {
                            store.hold(&request, &id, now() + Duration::milliseconds(100), now())
                        })
                        .await;
                    }
                    // Book, then cancel every other one (the cancel runs the offer step).
                    _ => {
                        let request = booking(&format!("b{w}-{n}"), s, i);
                        let confirmation = ConfirmationNumber::generate();
                        let outcome =
                            retried(&seen, || store.book(&request, &confirmation, now())).await;
                        let Ok(a) = outcome else { continue };
                        if n % 2 == 0 {
                            let c = Cancellation {
                                request_id: RequestId::parse(&format!("c{w}-{n}")).unwrap(),
                                confirmation: a.confirmation.clone(),
                                passport: applicant(i).passport,
                                admission: None,
                            };
                            match retried(&seen, || store.cancel(&c, now())).await {
                                Ok(_) => {}
                                Err(e) => panic!("cancel of a booked appointment: {e:?}"),
                            }
                        } else {
                            booked.lock().unwrap().push((i, a.confirmation));
                        }
                    }
                }
            }
        }));
    }
    // The sweeper (expired holds come back through the offer step) and capacity raises.
    {
        let (store, seen, stop) = (store.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut raise = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = retried(&seen, || store.reclaim_expired_holds(now())).await;
                raise += 1;
                if raise % 10 == 0 {
                    let s = slot(raise / 10);
                    let _ =
                        retried(&seen, || store.set_capacity(&s, SEATS + raise / 10, now())).await;
                }
                tokio::time::sleep(StdDuration::from_millis(30)).await;
            }
        }));
    }

    // Mid-storm: move the tag's slot to another primary.
    while ops.load(Ordering::Relaxed) < 40 {
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    let tag_slot = key_slot("{slotd}");
    let source = cluster.owner("{slotd}");
    let target = cluster
        .nodes()
        .into_iter()
        .find(|n| n.primary && n.id != source.id && !n.slots.is_empty())
        .expect("another primary");
    let mover = {
        let cluster = cluster.clone();
        let (source, target) = (source.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            migrate_slot(
                &cluster,
                tag_slot,
                (source.port, &source.id),
                (target.port, &target.id),
            )
        })
    };
    let moved = mover.await.unwrap();
    assert!(
        moved > 50,
        "the slot held the booking state ({moved} keys moved)"
    );
    // A little more storm on the new owner, then stop.
    let after = ops.load(Ordering::Relaxed);
    let deadline = Instant::now() + StdDuration::from_secs(30);
    while ops.load(Ordering::Relaxed) < after + 20 && Instant::now() < deadline {
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(cluster.owner("{slotd}").port, target.port, "the slot moved");

    let (aborted, refused) = {
        let seen = seen.lock().unwrap();
        (seen.aborted.clone(), seen.refused_while_moving)
    };
    assert!(
        aborted.is_empty(),
        "scripts failed after writing: {aborted:?}"
    );
    eprintln!("{moved} keys moved; {refused} calls refused while the slot moved (retried)");
    // Holds still live expire; the sweeper's last pass returns them.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    store.reclaim_expired_holds(now()).await.unwrap();

    let range = DateRange::new(day().date, day().date).unwrap();
    let report = store
        .audit(&day().post, &day().category, range)
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    for s in store
        .slots(&day().post, &day().category, range)
        .await
        .unwrap()
    {
        assert_eq!(
            s.booked + s.held + s.bookable(),
            s.capacity,
            "seats = capacity - booked - held on {}",
            s.slot
        );
    }
    let booked = booked.lock().unwrap().clone();
    for (i, confirmation) in &booked {
        let a = store
            .appointment(confirmation, &applicant(*i).passport)
            .await
            .unwrap_or_else(|e| panic!("acknowledged booking {confirmation} lost: {e:?}"));
        assert_eq!(a.status, AppointmentStatus::Booked);
    }
}
