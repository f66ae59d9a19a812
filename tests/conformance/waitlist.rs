//! Conformance cases of the waitlist: released seats are offered to waiting entries in join
//! order, atomically with the release. Run on every backend by `backend_matrix!` in
//! `tests/conformance.rs`.

use chrono::Duration;

use slotd::domain::lifecycle::{HoldConfirmation, HoldRelease, HoldStatus};
use slotd::domain::waitlist::{
    EntryId, EntryStatus, WaitlistEntry, WaitlistJoin, DEFAULT_OFFER_TTL_SECS,
};

use super::*;

fn join_request(request_id: &str, from: i64, to: i64, times: &[&str], ids: &[u32]) -> WaitlistJoin {
    WaitlistJoin::new(
        RequestId::parse(request_id).unwrap(),
        post(),
        category(),
        range(from, to),
        times.iter().map(|x| t(x)).collect(),
        ids.iter().map(|i| applicant(*i)).collect(),
    )
    .unwrap()
}

pub(super) async fn join(
    store: &Store,
    request_id: &str,
    from: i64,
    to: i64,
    ids: &[u32],
) -> WaitlistEntry {
    store
        .join_waitlist(
            &join_request(request_id, from, to, &[], ids),
            &EntryId::generate(),
            2,
            epoch(),
        )
        .await
        .unwrap()
}

pub(super) async fn entry(store: &Store, e: &WaitlistEntry) -> WaitlistEntry {
    store.waitlist_entry(&e.id).await.unwrap()
}

async fn status_of(store: &Store, e: &WaitlistEntry) -> EntryStatus {
    entry(store, e).await.status
}

/// The seats of `e`'s pending offer, which must exist and be live.
pub(super) async fn offer_of(store: &Store, e: &WaitlistEntry) -> slotd::domain::lifecycle::Hold {
    let now = entry(store, e).await;
    assert_eq!(now.status, EntryStatus::Offered, "{now:?}");
    let offer = now.offer.expect("an offered entry shows its offer");
    assert_eq!(offer.status, HoldStatus::Held);
    assert_eq!(offer.entry.as_ref(), Some(&e.id));
    assert_eq!(offer.applicants, e.applicants);
    offer
}

async fn audit_clean(store: &Store) {
    let report = store
        .audit(&post(), &category(), range(0, 10))
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

fn offer_expiry() -> chrono::DateTime<chrono::Utc> {
    epoch() + Duration::seconds(DEFAULT_OFFER_TTL_SECS as i64)
}

pub async fn three_waiters_and_a_cancellation_get_offers_in_join_order(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 2), epoch())
        .await
        .unwrap();
    register(&store, 1..=6).await;
    let a1 = book(&store, &booking("a1", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let a2 = book(&store, &booking("a2", slot(1, "08:00"), &[2]))
        .await
        .unwrap();
    let w1 = join(&store, "w1", 1, 3, &[3]).await;
    let w2 = join(&store, "w2", 0, 1, &[4]).await;
    let w3 = join(&store, "w3", 1, 1, &[5]).await;
    assert_eq!(
        [w1.position, w2.position, w3.position],
        [Some(1), Some(2), Some(3)]
    );
    assert_eq!(w1.status, EntryStatus::Waiting);

    store
        .cancel(&cancellation("c1", &a1.confirmation, 1), epoch())
        .await
        .unwrap();
    let offer1 = offer_of(&store, &w1).await;
    assert_eq!(offer1.slot, slot(1, "08:00"));
    assert_eq!(offer1.expires_at, offer_expiry());
    assert_eq!(status_of(&store, &w2).await, EntryStatus::Waiting);
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held, s.remaining()), (1, 1, 0));
    // The released seat is not publicly bookable.
    assert!(matches!(
        refusal(book(&store, &booking("public", slot(1, "08:00"), &[6])).await),
        Error::SlotFull { .. }
    ));

    store
        .cancel(&cancellation("c2", &a2.confirmation, 2), epoch())
        .await
        .unwrap();
    offer_of(&store, &w2).await;
    assert_eq!(status_of(&store, &w3).await, EntryStatus::Waiting);
    assert_eq!(entry(&store, &w3).await.position, Some(3));

    // w1 accepts: an appointment for its group, the entry is fulfilled and out of line.
    let appointment = store
        .confirm_hold(
            &HoldConfirmation {
                request_id: RequestId::parse("accept-1").unwrap(),
                hold: offer1.id.clone(),
                admission: None,
            },
            &ConfirmationNumber::generate(),
            epoch() + Duration::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(appointment.applicants, w1.applicants);
    let done = entry(&store, &w1).await;
    assert_eq!(done.status, EntryStatus::Fulfilled);
    assert_eq!(done.confirmation.as_ref(), Some(&appointment.confirmation));
    assert_eq!(done.position, None);
    assert_eq!(entry(&store, &w3).await.position, Some(2));
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held, s.remaining()), (1, 1, 0));
    audit_clean(&store).await;
}

pub async fn an_expired_offer_passes_to_the_next_entry(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let a = book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let w1 = join(&store, "w1", 1, 1, &[2]).await;
    let w2 = join(&store, "w2", 1, 1, &[3]).await;
    store
        .cancel(&cancellation("c", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    let offer = offer_of(&store, &w1).await;

    // The sweeper at the offer's expiry: w1 leaves the line, w2 gets the seat.
    let later = offer_expiry() + Duration::seconds(1);
    assert!(store.reclaim_expired_holds(later).await.unwrap().holds >= 1);
    let gone = entry(&store, &w1).await;
    assert_eq!(gone.status, EntryStatus::Expired);
    assert_eq!(gone.position, None);
    let next = offer_of(&store, &w2).await;
    assert_eq!(
        next.expires_at,
        later + Duration::seconds(DEFAULT_OFFER_TTL_SECS as i64)
    );
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held), (0, 1));
    // The expired offer books nothing.
    assert!(matches!(
        refusal(
            store
                .confirm_hold(
                    &HoldConfirmation {
                        request_id: RequestId::parse("late").unwrap(),
                        hold: offer.id.clone(),
                        admission: None,
                    },
                    &ConfirmationNumber::generate(),
                    later,
                )
                .await
        ),
        Error::HoldExpired { .. }
    ));
    audit_clean(&store).await;
}

pub async fn a_declined_offer_passes_on_and_the_decliner_keeps_its_place(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let a = book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let w1 = join(&store, "w1", 1, 1, &[2]).await;
    let w2 = join(&store, "w2", 1, 1, &[3]).await;
    store
        .cancel(&cancellation("c", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    let offer = offer_of(&store, &w1).await;
    store
        .release_hold(
            &HoldRelease {
                request_id: RequestId::parse("decline").unwrap(),
                hold: offer.id.clone(),
            },
            epoch() + Duration::minutes(1),
        )
        .await
        .unwrap();
    let back = entry(&store, &w1).await;
    assert_eq!(back.status, EntryStatus::Waiting);
    assert_eq!(back.position, Some(1));
    assert!(back.offer.is_none());
    offer_of(&store, &w2).await;
    audit_clean(&store).await;
}

pub async fn a_capacity_raise_and_newly_opened_slots_go_to_waiters_first(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=7).await;
    book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let w1 = join(&store, "w1", 1, 1, &[2]).await;
    let w2 = join(&store, "w2", 1, 1, &[3, 4]).await;
    let w3 = join(&store, "w3", 2, 2, &[5]).await;

    let s = store
        .set_capacity(&slot(1, "08:00"), 4, epoch())
        .await
        .unwrap();
    assert_eq!((s.booked, s.held, s.remaining()), (1, 3, 0));
    offer_of(&store, &w1).await;
    assert_eq!(offer_of(&store, &w2).await.seats(), 2);
    assert!(matches!(
        refusal(book(&store, &booking("public", slot(1, "08:00"), &[6])).await),
        Error::SlotFull { .. }
    ));

    // Day 2 opens: its first seat goes to w3, the second is public.
    store
        .open_slots(&plan(2, 2, "09:00", "09:00", 2), epoch())
        .await
        .unwrap();
    assert_eq!(offer_of(&store, &w3).await.slot, slot(2, "09:00"));
    book(&store, &booking("public-2", slot(2, "09:00"), &[7]))
        .await
        .unwrap();
    audit_clean(&store).await;
}

pub async fn offers_respect_times_ranges_groups_and_the_share(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:15", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=9).await;
    let a = book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let b = book(&store, &booking("b", slot(1, "08:15"), &[2]))
        .await
        .unwrap();
    // Three entries that do not fit 08:00 on day 1: another time, another date, a group of 2.
    let later_time = store
        .join_waitlist(
            &join_request("w-time", 1, 1, &["08:15"], &[3]),
            &EntryId::generate(),
            2,
            epoch(),
        )
        .await
        .unwrap();
    let other_day = join(&store, "w-day", 2, 4, &[4]).await;
    let group = join(&store, "w-group", 1, 1, &[5, 6]).await;
    store
        .cancel(&cancellation("ca", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    for e in [&later_time, &other_day, &group] {
        assert_eq!(status_of(&store, e).await, EntryStatus::Waiting);
    }
    // Nobody matches: the seat is public.
    book(&store, &booking("public", slot(1, "08:00"), &[7]))
        .await
        .unwrap();

    // 08:15 is released: it goes to the entry waiting for 08:15 ...
    store
        .cancel(&cancellation("cb", &b.confirmation, 2), epoch())
        .await
        .unwrap();
    offer_of(&store, &later_time).await;

    // ... and with a share of 0 nothing released goes to the line.
    assert_eq!(
        store
            .set_waitlist_share(&post(), &category(), 0)
            .await
            .unwrap(),
        0
    );
    let single = join(&store, "w-single", 1, 1, &[8]).await;
    let full = book(&store, &booking("public-2", slot(1, "08:00"), &[9])).await;
    assert!(matches!(refusal(full), Error::SlotFull { .. }));
    let mine = store
        .manifest(&ManifestQuery {
            day: day(1),
            after: None,
            limit: 50,
            include_cancelled: false,
        })
        .await
        .unwrap()
        .appointments
        .into_iter()
        .find(|x| x.slot.time == t("08:00"))
        .unwrap();
    store
        .cancel(&cancellation("c-public", &mine.confirmation, 7), epoch())
        .await
        .unwrap();
    assert_eq!(status_of(&store, &single).await, EntryStatus::Waiting);
    book(&store, &booking("public-3", slot(1, "08:00"), &[9]))
        .await
        .unwrap();
    audit_clean(&store).await;
}

pub async fn joining_checks_receipts_passports_and_request_ids(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let first = join(&store, "w", 1, 1, &[2]).await;
    // The same request again: the same entry; other content under the id: refused.
    assert_eq!(join(&store, "w", 1, 1, &[2]).await.id, first.id);
    assert!(matches!(
        refusal(
            store
                .join_waitlist(
                    &join_request("w", 1, 2, &[], &[2]),
                    &EntryId::generate(),
                    2,
                    epoch()
                )
                .await
        ),
        Error::RequestIdReused { .. }
    ));
    // One entry per passport.
    assert!(matches!(
        refusal(
            store
                .join_waitlist(
                    &join_request("w-again", 1, 1, &[], &[3, 2]),
                    &EntryId::generate(),
                    2,
                    epoch()
                )
                .await
        ),
        Error::AlreadyWaiting { passport_number } if passport_number == passport(2).to_string()
    ));
    // A booked passport, an unregistered receipt.
    assert!(matches!(
        refusal(
            store
                .join_waitlist(
                    &join_request("w-booked", 1, 1, &[], &[1]),
                    &EntryId::generate(),
                    2,
                    epoch()
                )
                .await
        ),
        Error::ReceiptInUse { .. }
    ));
    assert!(matches!(
        refusal(
            store
                .join_waitlist(
                    &join_request("w-unknown", 1, 1, &[], &[99]),
                    &EntryId::generate(),
                    2,
                    epoch()
                )
                .await
        ),
        Error::ReceiptNotRegistered { .. }
    ));
    // An expired receipt (paid 365 days before).
    assert!(matches!(
        refusal(
            store
                .join_waitlist(
                    &join_request("w-old", 1, 1, &[], &[3]),
                    &EntryId::generate(),
                    2,
                    epoch() + Duration::days(366)
                )
                .await
        ),
        Error::ReceiptExpired { .. }
    ));
    assert!(matches!(
        refusal(store.waitlist_entry(&EntryId::generate()).await),
        Error::WaitlistEntryNotFound
    ));
    // Leaving frees the passport for a new entry, at the back of the line.
    let left = store.leave_waitlist(&first.id, epoch()).await.unwrap();
    assert_eq!(left.status, EntryStatus::Left);
    assert_eq!(left.position, None);
    let again = store.leave_waitlist(&first.id, epoch()).await.unwrap();
    assert_eq!(again.status, EntryStatus::Left);
    let rejoined = join(&store, "w-2", 1, 1, &[2]).await;
    assert_eq!(rejoined.position, Some(1));
    assert_ne!(rejoined.id, first.id);
}

pub async fn an_entry_that_booked_elsewhere_is_cancelled_and_leaving_passes_an_offer_on(
    store: Store,
) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:15", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    let a = book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let w1 = join(&store, "w1", 1, 1, &[2]).await;
    let w2 = join(&store, "w2", 1, 1, &[3]).await;
    let w3 = join(&store, "w3", 1, 1, &[4]).await;
    // w1's applicant books 08:15 publicly: when 08:00 comes back, w1 no longer qualifies.
    book(&store, &booking("elsewhere", slot(1, "08:15"), &[2]))
        .await
        .unwrap();
    store
        .cancel(&cancellation("c", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    let cancelled = entry(&store, &w1).await;
    assert_eq!(cancelled.status, EntryStatus::Cancelled);
    assert_eq!(cancelled.reason.as_deref(), Some("RECEIPT_IN_USE"));
    offer_of(&store, &w2).await;

    // w2 leaves with its offer pending: the seat passes to w3 in the same step.
    let left = store
        .leave_waitlist(&w2.id, epoch() + Duration::minutes(1))
        .await
        .unwrap();
    assert_eq!(left.status, EntryStatus::Left);
    offer_of(&store, &w3).await;
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held), (0, 1));
    audit_clean(&store).await;
}

pub async fn a_public_storm_during_the_release_never_takes_an_offered_seat(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 3), epoch())
        .await
        .unwrap();
    register(&store, 1..=64).await;
    let mut booked = Vec::new();
    for i in 1..=3 {
        booked.push(
            book(&store, &booking(&format!("a{i}"), slot(1, "08:00"), &[i]))
                .await
                .unwrap(),
        );
    }
    let waiters = [
        join(&store, "w1", 1, 1, &[4]).await,
        join(&store, "w2", 1, 1, &[5]).await,
        join(&store, "w3", 1, 1, &[6]).await,
    ];
    let mut tasks = Vec::new();
    for i in 10..=64u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            book(&store, &booking(&format!("p{i}"), slot(1, "08:00"), &[i])).await
        }));
    }
    for (i, a) in booked.iter().enumerate() {
        let store = store.clone();
        let number = a.confirmation.clone();
        let holder = u32::try_from(i).unwrap() + 1;
        tasks.push(tokio::spawn(async move {
            store
                .cancel(
                    &cancellation(&format!("c{holder}"), &number, holder),
                    epoch(),
                )
                .await
        }));
    }
    let mut public_bookings = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(a) if a.status == slotd::domain::types::AppointmentStatus::Booked => {
                public_bookings += 1
            }
            Ok(_) => {}
            Err(e) => assert!(
                matches!(&e, StoreError::Domain(Error::SlotFull { .. })),
                "{e:?}"
            ),
        }
    }
    assert_eq!(public_bookings, 0, "a released seat went to the public");
    for w in &waiters {
        offer_of(&store, w).await;
    }
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held, s.remaining()), (0, 3, 0));
    audit_clean(&store).await;
}

pub async fn offers_appear_in_the_event_log(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=2).await;
    let a = book(&store, &booking("a", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let w = join(&store, "w", 1, 1, &[2]).await;
    store
        .cancel(&cancellation("c", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    let offer = offer_of(&store, &w).await;
    let events = store
        .events(
            slotd::domain::lifecycle::EventStart::After(Default::default()),
            1000,
        )
        .await
        .unwrap()
        .events;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let joined = kinds.iter().position(|k| *k == "waitlist_joined").unwrap();
    let cancelled = kinds.iter().position(|k| *k == "cancelled").unwrap();
    let offered = kinds.iter().position(|k| *k == "offered").unwrap();
    assert!(joined < cancelled && cancelled < offered, "{kinds:?}");
    let e = &events[offered];
    assert_eq!(e.field("entry"), Some(w.id.as_str()));
    assert_eq!(e.field("hold_ref"), Some(offer.id.reference().as_str()));
    assert_eq!(e.field("slot"), Some(slot(1, "08:00").to_string().as_str()));
}

pub(super) async fn join_moving(
    store: &Store,
    request_id: &str,
    appointment: &Appointment,
    from: i64,
    to: i64,
    limit: u32,
) -> Result<WaitlistEntry, StoreError> {
    let ids: Vec<u32> = appointment
        .applicants
        .iter()
        .map(|a| a.passport.as_str()[1..].parse().unwrap())
        .collect();
    store
        .join_waitlist(
            &join_request(request_id, from, to, &[], &ids).moving(appointment.confirmation.clone()),
            &EntryId::generate(),
            limit,
            epoch(),
        )
        .await
}

pub async fn a_booked_group_waits_for_an_earlier_date_and_accepting_moves_its_appointment(
    store: Store,
) {
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=5).await;
    let late = book(&store, &booking("late", slot(3, "08:00"), &[1, 2])).await;
    // A group of two does not fit one seat: give day 3 two seats first.
    assert!(matches!(refusal(late), Error::SlotFull { .. }));
    store
        .set_capacity(&slot(3, "08:00"), 2, epoch())
        .await
        .unwrap();
    store
        .set_capacity(&slot(1, "08:00"), 2, epoch())
        .await
        .unwrap();
    let mine = book(&store, &booking("late", slot(3, "08:00"), &[1, 2]))
        .await
        .unwrap();
    let early = book(&store, &booking("early", slot(1, "08:00"), &[3, 4]))
        .await
        .unwrap();
    let moving = join_moving(&store, "w-move", &mine, 1, 2, 2).await.unwrap();
    assert_eq!(moving.moving.as_ref(), Some(&mine.confirmation));
    // Someone waiting for day 3 gets the seats the move leaves behind.
    let behind = join(&store, "w-behind", 3, 3, &[5]).await;

    store
        .cancel(&cancellation("c", &early.confirmation, 3), epoch())
        .await
        .unwrap();
    let offer = offer_of(&store, &moving).await;
    assert_eq!(offer.slot, slot(1, "08:00"));
    // The offer takes seats only: the passports stay claimed by the appointment.
    let moved = store
        .confirm_hold(
            &HoldConfirmation {
                request_id: RequestId::parse("accept").unwrap(),
                hold: offer.id.clone(),
                admission: None,
            },
            &ConfirmationNumber::generate(),
            epoch() + Duration::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(moved.confirmation, mine.confirmation);
    assert_eq!(moved.slot, slot(1, "08:00"));
    assert_eq!(moved.history.len(), 1);
    assert_eq!(moved.history[0].from, slot(3, "08:00"));
    let done = entry(&store, &moving).await;
    assert_eq!(done.status, EntryStatus::Fulfilled);
    assert_eq!(done.confirmation.as_ref(), Some(&mine.confirmation));
    // Accepting again answers the same appointment.
    let again = store
        .confirm_hold(
            &HoldConfirmation {
                request_id: RequestId::parse("accept-2").unwrap(),
                hold: offer.id.clone(),
                admission: None,
            },
            &ConfirmationNumber::generate(),
            epoch() + Duration::minutes(2),
        )
        .await
        .unwrap();
    assert_eq!(again.confirmation, mine.confirmation);
    assert_eq!(again.slot, slot(1, "08:00"));
    // Day 3's two seats came back: one fits the waiter behind, one is public.
    assert_eq!(offer_of(&store, &behind).await.slot, slot(3, "08:00"));
    let day3 = slot_state(&store, &slot(3, "08:00")).await;
    assert_eq!((day3.booked, day3.held, day3.remaining()), (0, 1, 1));
    let day1 = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((day1.booked, day1.held), (2, 0));
    // The manifests follow the move.
    let on = |d: i64| {
        let store = store.clone();
        async move {
            store
                .manifest(&ManifestQuery {
                    day: day(d),
                    after: None,
                    limit: 50,
                    include_cancelled: false,
                })
                .await
                .unwrap()
                .appointments
                .into_iter()
                .map(|a| a.confirmation)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(on(1).await, vec![mine.confirmation.clone()]);
    assert!(on(3).await.is_empty());
    audit_clean(&store).await;
}

pub async fn moving_entries_are_checked_at_join_and_when_seats_come(store: Store) {
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    let mine = book(&store, &booking("mine", slot(2, "08:00"), &[1]))
        .await
        .unwrap();
    let early = book(&store, &booking("early", slot(1, "08:00"), &[2]))
        .await
        .unwrap();
    // Only earlier dates; a reschedule must be left; the group must be the appointment's.
    assert!(matches!(
        refusal(join_moving(&store, "bad-range", &mine, 1, 2, 2).await),
        Error::Invalid { violations } if violations[0].field == "to_date"
    ));
    assert!(matches!(
        refusal(join_moving(&store, "no-moves", &mine, 1, 1, 0).await),
        Error::RescheduleLimit { .. }
    ));
    let stranger = store
        .join_waitlist(
            &join_request("stranger", 1, 1, &[], &[3]).moving(mine.confirmation.clone()),
            &EntryId::generate(),
            2,
            epoch(),
        )
        .await;
    assert!(matches!(refusal(stranger), Error::AppointmentNotFound));
    let moving = join_moving(&store, "w", &mine, 1, 1, 2).await.unwrap();
    let next = join(&store, "w-next", 1, 1, &[4]).await;
    // The appointment is cancelled while waiting: when seats come, the entry is cancelled and
    // the seat goes to the next entry.
    store
        .cancel(&cancellation("c-mine", &mine.confirmation, 1), epoch())
        .await
        .unwrap();
    store
        .cancel(&cancellation("c-early", &early.confirmation, 2), epoch())
        .await
        .unwrap();
    let gone = entry(&store, &moving).await;
    assert_eq!(gone.status, EntryStatus::Cancelled);
    assert_eq!(gone.reason.as_deref(), Some("APPOINTMENT_CANCELLED"));
    offer_of(&store, &next).await;
    audit_clean(&store).await;
}

/// #20 bounded data: an entry still in line when its range has passed is retired by the
/// sweeper step (EXPIRED, reason DATES_PASSED, one bounded batch per call) and frees its
/// passport, which can then join again. Before, it stayed WAITING for ever and the passport
/// got ALREADY_WAITING.
pub async fn a_passed_waitlist_entry_is_retired_and_its_passport_can_join_again(store: Store) {
    store
        .open_slots(&plan(1, 6, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, [1, 2]).await;
    let passed = join(&store, "w-passed", 1, 1, &[1]).await;
    let current = join(&store, "w-current", 1, 5, &[2]).await;
    // Not yet: the range ends on day 1 and is retired from 00:00 UTC two days after it.
    let day_two = epoch() + Duration::days(2);
    assert_eq!(store.retire_passed_waitlist(day_two).await.unwrap(), 0);
    assert_eq!(status_of(&store, &passed).await, EntryStatus::Waiting);

    let later = epoch() + Duration::days(3);
    assert_eq!(store.retire_passed_waitlist(later).await.unwrap(), 1);
    let retired = entry(&store, &passed).await;
    assert_eq!(retired.status, EntryStatus::Expired);
    assert_eq!(retired.reason.as_deref(), Some("DATES_PASSED"));
    assert_eq!(status_of(&store, &current).await, EntryStatus::Waiting);
    assert_eq!(store.retire_passed_waitlist(later).await.unwrap(), 0);

    let again = store
        .join_waitlist(
            &join_request("w-again", 4, 6, &[], &[1]),
            &EntryId::generate(),
            2,
            later,
        )
        .await
        .expect("the retired entry's passport joins again");
    assert_eq!(again.status, EntryStatus::Waiting);
    // The passport still waiting in its current entry does not.
    let refused = store
        .join_waitlist(
            &join_request("w-twice", 4, 6, &[], &[2]),
            &EntryId::generate(),
            2,
            later,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(StoreError::Domain(
                slotd::domain::Error::AlreadyWaiting { .. }
            ))
        ),
        "{refused:?}"
    );
}

/// A hold of `ids` on `s`, made at the epoch, expiring ten minutes later.
async fn hold_for_ten_minutes(store: &Store, request_id: &str, s: SlotRef, ids: &[u32]) {
    store
        .hold(
            &booking(request_id, s, ids),
            &slotd::domain::lifecycle::HoldId::generate(),
            epoch() + Duration::minutes(10),
            epoch(),
        )
        .await
        .unwrap();
}

/// The seats of holds one sweep reclaims together are freed first and then offered, so the
/// group ahead in line that needs them all gets them instead of a smaller entry behind it.
pub async fn seats_of_holds_reclaimed_together_go_to_the_group_ahead_in_line(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 2), epoch())
        .await
        .unwrap();
    register(&store, 1..=5).await;
    hold_for_ten_minutes(&store, "h1", slot(1, "08:00"), &[1]).await;
    hold_for_ten_minutes(&store, "h2", slot(1, "08:00"), &[2]).await;
    let pair = join(&store, "pair", 1, 1, &[3, 4]).await;
    let single = join(&store, "single", 1, 1, &[5]).await;

    let later = epoch() + Duration::minutes(10) + Duration::seconds(1);
    assert_eq!(store.reclaim_expired_holds(later).await.unwrap().holds, 2);
    let offer = offer_of(&store, &pair).await;
    assert_eq!(offer.seats(), 2);
    assert_eq!(status_of(&store, &single).await, EntryStatus::Waiting);
    let s = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((s.booked, s.held, s.remaining()), (0, 2, 0));
    audit_clean(&store).await;
}

/// On a date someone waits for, an expired hold that the sweeper has not reclaimed yet still
/// counts as held: its seats go to the line first (the sweep, within about a second), so a
/// booking of its slot meanwhile is refused on every backend alike, and books after the sweep
/// when the line does not want that time.
pub async fn an_expired_hold_on_a_date_with_a_waitlist_counts_as_held_until_the_sweep(
    store: Store,
) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:15", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    hold_for_ten_minutes(&store, "h", slot(1, "08:00"), &[1]).await;
    book(&store, &booking("b", slot(1, "08:15"), &[2]))
        .await
        .unwrap();
    let other_time = store
        .join_waitlist(
            &join_request("w", 1, 1, &["08:15"], &[3]),
            &EntryId::generate(),
            2,
            epoch(),
        )
        .await
        .unwrap();

    let later = epoch() + Duration::minutes(11);
    let late = booking("late", slot(1, "08:00"), &[4]);
    assert!(matches!(
        refusal(
            store
                .book(&late, &ConfirmationNumber::generate(), later)
                .await
        ),
        Error::SlotFull { .. }
    ));
    assert_eq!(store.reclaim_expired_holds(later).await.unwrap().holds, 1);
    assert_eq!(status_of(&store, &other_time).await, EntryStatus::Waiting);
    store
        .book(&late, &ConfirmationNumber::generate(), later)
        .await
        .unwrap();
    audit_clean(&store).await;
}
