//! The calendar cache, the per-replica slot feed and WatchAvailability (src/app/availability.rs), on
//! both backends: the cache's staleness bound holds for writes of another replica, the feed
//! shows them long before it, watchers see cancellations and other replicas' bookings, and a
//! thousand watchers cost one store read per dirty day per feed tick.

use crate::support;

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Code, Streaming};

use slotd::api::pb;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::app::availability::CalendarOptions;
use support::backend::Backend;
use support::*;

/// A replica of the deployment: its own server and (on Redis) its own connection.
trait Replicas {
    async fn replica(&self, calendar: CalendarOptions) -> TestServer;
}

impl Replicas for Backend {
    async fn replica(&self, calendar: CalendarOptions) -> TestServer {
        TestServer::start_calendar(self.store(), calendar).await
    }
}

/// Hands the backend to the case (`backend_matrix!`, tests/support/backend.rs).
async fn on(backend: Backend, case: impl AsyncFnOnce(Backend)) {
    case(backend).await;
}

/// How long a test waits for a WatchAvailability update. The feed ticks every 250 ms
/// (`CalendarOptions::default`), so on an idle machine an update comes well within a second;
/// that latency is for the benchmarks to measure (benches/README.md). A test asserts what the
/// update says, and waits for it up to this generous bound, so a loaded CI machine cannot fail it.
const UPDATE_DEADLINE: Duration = Duration::from_secs(30);

/// Waits (a condition, bounded) until the server's feed has read and published everything the
/// setup wrote: a watcher opened after this cannot be handed a change of the setup's days. A
/// day opened through the server is dirty at once (read-your-writes) and its event follows in
/// the log; the feed reads the log in order and publishes after each read. So: open an
/// unwatched sentinel day and wait for the feed to read its event (it has read all before it),
/// then a second one, read in a later round than the first round's publish (a round reads
/// until a page comes back short; these pages hold a handful of events).
async fn feed_settled(server: &TestServer) {
    let availability = server.app.availability().clone();
    for sentinel in [day(40), day(41)] {
        let read = availability.stats().events;
        open_day(server, &sentinel, 1).await;
        let deadline = tokio::time::Instant::now() + UPDATE_DEADLINE;
        while availability.stats().events <= read {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the feed never read the sentinel day's event"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn calendar(cache_ms: u64, feed_ms: u64) -> CalendarOptions {
    CalendarOptions {
        cache_max_age: Duration::from_millis(cache_ms),
        feed_interval: Duration::from_millis(feed_ms),
    }
}

async fn book(server: &TestServer, id: &str, i: u32, date: &str, time: &str) -> String {
    server
        .booking()
        .await
        .book_appointment(book_request(id, slot(date, time), vec![applicant(i)]))
        .await
        .expect("book")
        .into_inner()
        .appointment
        .expect("appointment")
        .confirmation_number
}

async fn cancel(server: &TestServer, confirmation: &str, i: u32, id: &str) {
    server
        .booking()
        .await
        .cancel_appointment(pb::CancelAppointmentRequest {
            confirmation_number: confirmation.into(),
            passport_number: applicant(i).passport_number,
            request_id: id.into(),
        })
        .await
        .expect("cancel");
}

fn watch_request(from: &str, to: &str) -> pb::WatchAvailabilityRequest {
    pb::WatchAvailabilityRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: from.into(),
        to_date: to.into(),
    }
}

async fn watch(
    client: &mut CalendarServiceClient<Channel>,
    from: &str,
    to: &str,
) -> Streaming<pb::AvailabilityUpdate> {
    client
        .watch_availability(watch_request(from, to))
        .await
        .expect("watch")
        .into_inner()
}

/// The next update, within `wait`.
async fn next(
    stream: &mut Streaming<pb::AvailabilityUpdate>,
    wait: Duration,
) -> pb::AvailabilityUpdate {
    tokio::time::timeout(wait, stream.message())
        .await
        .expect("an update in time")
        .expect("stream ok")
        .expect("stream open")
}

/// Updates until one shows the slot at `want` seats, all within `wait`; returns that update.
async fn until_update(
    stream: &mut Streaming<pb::AvailabilityUpdate>,
    date: &str,
    time: &str,
    want: u32,
    wait: Duration,
) -> pb::AvailabilityUpdate {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let update = next(stream, left).await;
        if seats(&update, date, time) == Some(want) {
            return update;
        }
    }
}

fn seats(update: &pb::AvailabilityUpdate, date: &str, time: &str) -> Option<u32> {
    update
        .slots
        .iter()
        .find(|s| s.date == date && s.time == time)
        .map(|s| s.seats_available)
}

/// Polls ListSlots on `server` until the slot shows `want` seats (up to UPDATE_DEADLINE).
async fn until_seats(server: &TestServer, date: &str, time: &str, want: u32) {
    let deadline = tokio::time::Instant::now() + UPDATE_DEADLINE;
    while seats_left(server, date, time).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{date} {time} never showed {want} seats"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the cache's staleness bound ----

/// The feed of replica B is made too slow to matter (a minute): only the cache's age bound can
/// make B see a write of replica A. Once `cache_max_age` has passed since the write, every
/// ListSlots on B must show it: the cached day was read before the write, so it is too old.
async fn a_write_by_another_replica_is_visible_once_the_bound_has_passed(backend: Backend) {
    let bound = Duration::from_millis(300);
    let a = backend.replica(CalendarOptions::default()).await;
    let b = backend.replica(calendar(300, 60_000)).await;
    let date = day(7);
    open_day(&a, &date, 4).await;
    register_receipts(&a, 1..=2).await;
    assert_eq!(seats_left(&b, &date, "08:00").await, 4, "B caches the day");

    let conf = book(&a, "b-1", 1, &date, "08:00").await;
    tokio::time::sleep(bound).await;
    assert_eq!(
        seats_left(&b, &date, "08:00").await,
        3,
        "booking past the bound"
    );
    cancel(&a, &conf, 1, "c-1").await;
    tokio::time::sleep(bound).await;
    assert_eq!(
        seats_left(&b, &date, "08:00").await,
        4,
        "cancel past the bound"
    );

    // Writes through B itself are read back at once, bound or not.
    book(&b, "b-2", 2, &date, "08:00").await;
    assert_eq!(seats_left(&b, &date, "08:00").await, 3);
    a.stop().await;
    b.stop().await;
}

/// With a cache bound of a minute, B still sees A's booking and cancellation: the feed reads
/// them from the event log (the cancellation through the slot its event now names).
async fn the_feed_shows_another_replicas_writes_long_before_the_bound(backend: Backend) {
    let a = backend.replica(CalendarOptions::default()).await;
    let b = backend.replica(calendar(60_000, 50)).await;
    let date = day(7);
    open_day(&a, &date, 4).await;
    register_receipts(&a, 1..=1).await;
    assert_eq!(seats_left(&b, &date, "08:15").await, 4);
    let before = b.app.availability().stats().events;

    let conf = book(&a, "b-1", 1, &date, "08:15").await;
    until_seats(&b, &date, "08:15", 3).await;
    cancel(&a, &conf, 1, "c-1").await;
    until_seats(&b, &date, "08:15", 4).await;
    assert!(b.app.availability().stats().events >= before + 2);
    a.stop().await;
    b.stop().await;
}

// ---- WatchAvailability ----

/// A cancellation reaches a watcher as an update of that one slot (not a new snapshot).
async fn a_watcher_sees_a_cancellation_as_an_update_of_that_slot_alone(backend: Backend) {
    let server = backend.replica(CalendarOptions::default()).await;
    let (d7, d8) = (day(7), day(8));
    open_day(&server, &d7, 4).await;
    open_day(&server, &d8, 2).await;
    register_receipts(&server, 1..=1).await;
    let conf = book(&server, "b-1", 1, &d7, "08:30").await;

    let mut client = server.calendar().await;
    let mut stream = watch(&mut client, &d7, &d8).await;
    let first = next(&mut stream, UPDATE_DEADLINE).await;
    assert!(first.snapshot);
    assert_eq!(first.slots.len(), 8, "every open slot of both days");
    assert_eq!(seats(&first, &d7, "08:30"), Some(3));
    assert_eq!(seats(&first, &d8, "08:00"), Some(2));

    cancel(&server, &conf, 1, "c-1").await;
    let update = until_update(&mut stream, &d7, "08:30", 4, UPDATE_DEADLINE).await;
    assert!(!update.snapshot);
    assert_eq!(
        update.slots.len(),
        1,
        "only the slot that changed: {update:?}"
    );
    drop(stream); // an open stream would hold the shutdown's drain
    server.stop().await;
}

async fn a_watcher_sees_a_booking_made_through_another_replica(backend: Backend) {
    let a = backend.replica(CalendarOptions::default()).await;
    let b = backend.replica(CalendarOptions::default()).await;
    let date = day(9);
    open_day(&a, &date, 4).await;
    register_receipts(&a, 1..=1).await;

    let mut client = b.calendar().await;
    let mut stream = watch(&mut client, &date, &date).await;
    let first = next(&mut stream, UPDATE_DEADLINE).await;
    assert_eq!(seats(&first, &date, "08:45"), Some(4));

    book(&a, "b-1", 1, &date, "08:45").await;
    until_update(&mut stream, &date, "08:45", 3, UPDATE_DEADLINE).await;

    // Closing the slot on A reports it at 0 seats.
    a.admin()
        .await
        .close_slots(admin(pb::CloseSlotsRequest {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date.clone(),
            time: "08:45".into(),
            ..Default::default()
        }))
        .await
        .expect("close");
    until_update(&mut stream, &date, "08:45", 0, UPDATE_DEADLINE).await;
    drop(stream); // an open stream would hold the shutdown's drain
    a.stop().await;
    b.stop().await;
}

/// A reschedule through replica A moves a seat between two days a watcher on B covers: the
/// feed reads both days from the `moved` event (from, to), and the update carries both slots.
async fn a_watcher_sees_both_days_of_a_reschedule_on_another_replica(backend: Backend) {
    let a = backend.replica(CalendarOptions::default()).await;
    let b = backend.replica(CalendarOptions::default()).await;
    let (d7, d8) = (day(7), day(8));
    open_day(&a, &d7, 3).await;
    open_day(&a, &d8, 3).await;
    register_receipts(&a, 1..=1).await;
    let conf = book(&a, "b-1", 1, &d7, "08:00").await;

    let mut client = b.calendar().await;
    let mut stream = watch(&mut client, &d7, &d8).await;
    let first = next(&mut stream, UPDATE_DEADLINE).await;
    assert_eq!(seats(&first, &d7, "08:00"), Some(2));
    assert_eq!(seats(&first, &d8, "08:30"), Some(3));

    a.booking()
        .await
        .reschedule_appointment(pb::RescheduleAppointmentRequest {
            confirmation_number: conf,
            passport_number: applicant(1).passport_number,
            request_id: "m-1".into(),
            new_slot: Some(slot(&d8, "08:30")),
        })
        .await
        .expect("reschedule");
    // Both changes, possibly over two updates.
    let (mut old_day, mut new_day) = (None, None);
    let deadline = tokio::time::Instant::now() + UPDATE_DEADLINE;
    while old_day != Some(3) || new_day != Some(2) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let update = next(&mut stream, left).await;
        old_day = seats(&update, &d7, "08:00").or(old_day);
        new_day = seats(&update, &d8, "08:30").or(new_day);
    }
    drop(stream); // an open stream would hold the shutdown's drain
    a.stop().await;
    b.stop().await;
}

/// 1,000 watchers of one day on one replica (over 8 connections) all get the booking, and the
/// feed read the day once per tick that found it dirty, not once per watcher.
async fn a_thousand_watchers_cost_one_read_per_dirty_day_per_tick(backend: Backend) {
    const WATCHERS: usize = 1_000;
    let server = backend.replica(CalendarOptions::default()).await;
    let date = day(10);
    open_day(&server, &date, 5).await;
    register_receipts(&server, 1..=1).await;

    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(server.calendar().await);
    }
    // Opened together, each with its snapshot.
    let opens = (0..WATCHERS).map(|i| {
        let mut client = clients[i % 8].clone();
        let date = date.clone();
        async move {
            let mut stream = watch(&mut client, &date, &date).await;
            let first = next(&mut stream, UPDATE_DEADLINE).await;
            assert_eq!(seats(&first, &date, "08:00"), Some(5));
            stream
        }
    });
    let streams = futures::future::join_all(opens).await;
    let availability = server.app.availability().clone();
    assert_eq!(availability.stats().watchers, WATCHERS as u64);
    let before = availability.stats();

    book(&server, "b-1", 1, &date, "08:00").await;
    let mut tasks = Vec::new();
    for mut stream in streams {
        let date = date.clone();
        tasks.push(tokio::spawn(async move {
            until_update(&mut stream, &date, "08:00", 4, UPDATE_DEADLINE).await;
            stream
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        kept.push(task.await.expect("every watcher saw the booking"));
    }
    let after = availability.stats();
    let reads = after.day_reads - before.day_reads;
    let ticks = after.ticks - before.ticks;
    assert!(reads >= 1, "the feed read the day");
    assert!(
        reads <= ticks,
        "one dirty day: at most one read per tick ({reads} reads in {ticks} ticks)"
    );
    assert!(reads < 10, "{reads} reads for {WATCHERS} watchers");

    drop(kept);
    let deadline = tokio::time::Instant::now() + UPDATE_DEADLINE;
    while availability.stats().watchers != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        availability.stats().watchers,
        0,
        "closed streams unregister"
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_availability_validates_like_list_available_dates() {
    let server = TestServer::memory().await;
    let mut client = server.calendar().await;
    let err = client
        .watch_availability(watch_request(&day(9), &day(7)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["to_date"]);
    let err = client
        .watch_availability(watch_request(&day(1), &day(400)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["to_date"]);
    let err = client
        .watch_availability(pb::WatchAvailabilityRequest {
            post_id: "bad post".into(),
            category: String::new(),
            from_date: "tomorrow".into(),
            to_date: day(1),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_fields(&err), ["post_id", "category", "from_date"]);
    let err = client
        .watch_availability(pb::WatchAvailabilityRequest {
            post_id: "NOWHERE".into(),
            ..watch_request(&day(1), &day(2))
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    server.stop().await;
}

/// The feed's fan-out costs O(watchers of the changed day): 300 watchers of one day and one of
/// another; a booking on the other day is handed to its one watcher only (the feed's
/// `deliveries` counter), and the 300 get nothing.
async fn the_fan_out_reaches_only_the_watchers_of_the_changed_day(backend: Backend) {
    const CROWD: usize = 300;
    let server = backend.replica(calendar(60_000, 50)).await;
    let crowded = day(10);
    let quiet = day(11);
    open_day(&server, &crowded, 5).await;
    open_day(&server, &quiet, 5).await;
    register_receipts(&server, 1..=1).await;
    // Else the feed's publish of the setup's days could race with the watchers' opening and
    // hand them a change of their day before `before` (correct, since a snapshot read just
    // before that publish would lack it, but not what this test counts).
    feed_settled(&server).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.calendar().await);
    }
    // Opened together: each first answer waits for a feed tick.
    let opens = (0..CROWD).map(|i| {
        let mut client = clients[i % 4].clone();
        let crowded = crowded.clone();
        async move {
            let mut stream = watch(&mut client, &crowded, &crowded).await;
            next(&mut stream, UPDATE_DEADLINE).await;
            stream
        }
    });
    let mut crowd = futures::future::join_all(opens).await;
    let mut lone = watch(&mut clients[0], &quiet, &quiet).await;
    next(&mut lone, UPDATE_DEADLINE).await;
    let availability = server.app.availability().clone();
    let before = availability.stats();

    book(&server, "b-1", 1, &quiet, "08:00").await;
    until_update(&mut lone, &quiet, "08:00", 4, UPDATE_DEADLINE).await;
    // The feed also reads the booking's event and re-reads the day: wait until it has (a
    // condition, so a slow machine cannot skip the check), then ten more feed intervals: still
    // one delivery. A slow machine runs fewer idle ticks in them, which cannot invent a stray
    // delivery.
    let deadline = tokio::time::Instant::now() + UPDATE_DEADLINE;
    while availability.stats().events < before.events + 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed never read the booking's event"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = availability.stats();
    assert_eq!(
        after.deliveries - before.deliveries,
        1,
        "one change of one day is handed to that day's one watcher"
    );
    for stream in &mut crowd {
        assert!(
            tokio::time::timeout(Duration::from_millis(1), stream.message())
                .await
                .is_err(),
            "a watcher of another day got a message"
        );
    }
    // Closed before the server stops, which would otherwise wait for them to end.
    drop(crowd);
    drop(lone);
    server.stop().await;
}

backend_matrix!(
    on;
    a_write_by_another_replica_is_visible_once_the_bound_has_passed,
    the_feed_shows_another_replicas_writes_long_before_the_bound,
    a_watcher_sees_a_cancellation_as_an_update_of_that_slot_alone,
    a_watcher_sees_a_booking_made_through_another_replica,
    a_watcher_sees_both_days_of_a_reschedule_on_another_replica,
    a_thousand_watchers_cost_one_read_per_dirty_day_per_tick,
    the_fan_out_reaches_only_the_watchers_of_the_changed_day,
);
