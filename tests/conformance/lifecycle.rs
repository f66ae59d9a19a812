//! Conformance cases of the booking lifecycle (holds, reschedules, events, operator views),
//! run on every backend by `backend_matrix!` in `tests/conformance.rs`.

use std::collections::{BTreeMap, HashSet};

use chrono::Duration;

use slotd::domain::lifecycle::{
    EventStart, HoldConfirmation, HoldId, HoldRelease, HoldStatus, Reschedule,
};

use super::*;

const TTL_MINUTES: i64 = 10;

fn hold_request(request_id: &str, slot: SlotRef, ids: &[u32]) -> Booking {
    booking(request_id, slot, ids)
}

async fn hold(
    store: &Store,
    request_id: &str,
    slot: SlotRef,
    ids: &[u32],
) -> Result<slotd::domain::lifecycle::Hold, StoreError> {
    store
        .hold(
            &hold_request(request_id, slot, ids),
            &HoldId::generate(),
            epoch() + Duration::minutes(TTL_MINUTES),
            epoch(),
        )
        .await
}

fn confirm(id: &HoldId, request_id: &str) -> HoldConfirmation {
    HoldConfirmation {
        request_id: RequestId::parse(request_id).unwrap(),
        hold: id.clone(),
        admission: None,
    }
}

fn release(id: &HoldId) -> HoldRelease {
    HoldRelease {
        request_id: RequestId::parse("release").unwrap(),
        hold: id.clone(),
    }
}

fn move_to(request_id: &str, a: &Appointment, to: SlotRef) -> Reschedule {
    Reschedule {
        request_id: RequestId::parse(request_id).unwrap(),
        confirmation: a.confirmation.clone(),
        passport: a.applicants[0].passport.clone(),
        new_slot: to,
        admission: None,
    }
}

async fn all_events(store: &Store) -> Vec<slotd::domain::lifecycle::Event> {
    store
        .events(
            EventStart::After(slotd::domain::lifecycle::EventId::default()),
            100_000,
        )
        .await
        .unwrap()
        .events
}

/// Only the lifecycle events (operator events such as `opened` differ per backend).
async fn lifecycle_events(store: &Store) -> Vec<(String, BTreeMap<String, String>)> {
    all_events(store)
        .await
        .into_iter()
        .filter(|e| {
            [
                "held",
                "hold_expired",
                "hold_released",
                "booked",
                "moved",
                "cancelled",
            ]
            .contains(&e.kind.as_str())
        })
        .map(|e| (e.kind, e.fields))
        .collect()
}

/// Slots, manifests and the event log: a refusal must leave all three as they were.
async fn full_snapshot(
    store: &Store,
) -> (
    (Vec<SlotState>, Vec<Vec<Appointment>>),
    Vec<slotd::domain::lifecycle::Event>,
) {
    (snapshot(store).await, all_events(store).await)
}

pub async fn a_hold_takes_the_seats_at_once_and_confirming_it_books_them(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 5), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let s = slot(1, "08:00");
    let h = hold(&store, "h-1", s.clone(), &[1, 2]).await.unwrap();
    assert_eq!(h.status, HoldStatus::Held);
    assert_eq!(h.expires_at, epoch() + Duration::minutes(TTL_MINUTES));
    let state = slot_state(&store, &s).await;
    assert_eq!((state.booked, state.held, state.remaining()), (0, 2, 3));
    assert_audit_clean(&store, 1, 1).await;

    // The same request_id replays the hold; other content under it is refused.
    let again = hold(&store, "h-1", s.clone(), &[1, 2]).await.unwrap();
    assert_eq!(again.id, h.id);
    assert!(matches!(
        refusal(hold(&store, "h-1", s.clone(), &[3]).await),
        Error::RequestIdReused { .. }
    ));

    let a = store
        .confirm_hold(
            &confirm(&h.id, "c-1"),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    assert_eq!(a.slot, s);
    assert_eq!(a.status, AppointmentStatus::Booked);
    assert_eq!(a.seats(), 2);
    let state = slot_state(&store, &s).await;
    assert_eq!((state.booked, state.held, state.remaining()), (2, 0, 3));
    // Confirming again answers the same appointment and books nothing more.
    let twice = store
        .confirm_hold(
            &confirm(&h.id, "c-2"),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    assert_eq!(twice.confirmation, a.confirmation);
    assert_eq!(slot_state(&store, &s).await.booked, 2);
    assert_eq!(
        store
            .appointment(&a.confirmation, &passport(2))
            .await
            .unwrap()
            .confirmation,
        a.confirmation
    );
    assert_eq!(all_manifest(&store, &day(1), false).await.len(), 1);
    assert_audit_clean(&store, 1, 1).await;
}

pub async fn an_expired_hold_returns_its_seats_exactly_once_and_confirming_it_books_nothing(
    store: Store,
) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 3), epoch())
        .await
        .unwrap();
    register(&store, 1..=2).await;
    let s = slot(1, "08:00");
    let h = hold(&store, "h-1", s.clone(), &[1, 2]).await.unwrap();
    let later = epoch() + Duration::minutes(TTL_MINUTES) + Duration::seconds(1);

    // Not yet due: the sweeper leaves it.
    assert_eq!(store.reclaim_expired_holds(epoch()).await.unwrap().holds, 0);
    assert_eq!(slot_state(&store, &s).await.held, 2);
    // Due: reclaimed once, never twice.
    assert_eq!(store.reclaim_expired_holds(later).await.unwrap().holds, 1);
    assert_eq!(store.reclaim_expired_holds(later).await.unwrap().holds, 0);
    let state = slot_state(&store, &s).await;
    assert_eq!((state.booked, state.held, state.remaining()), (0, 0, 3));

    let before = full_snapshot(&store).await;
    match refusal(
        store
            .confirm_hold(
                &confirm(&h.id, "c-1"),
                &ConfirmationNumber::generate(),
                later,
            )
            .await,
    ) {
        Error::HoldExpired { hold_id, .. } => assert_eq!(hold_id, h.id.to_string()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        refusal(store.release_hold(&release(&h.id), later).await),
        Error::HoldExpired { .. }
    ));
    assert_eq!(full_snapshot(&store).await, before);
    let expired: Vec<_> = lifecycle_events(&store)
        .await
        .into_iter()
        .filter(|(k, _)| k == "hold_expired")
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].1["hold_ref"], h.id.reference());
    assert_eq!(expired[0].1["seats"], "2");
    // The passports and receipts are free again.
    store
        .book(
            &booking("b-1", s.clone(), &[1, 2]),
            &ConfirmationNumber::generate(),
            later,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_audit_clean(&store, 1, 1).await;
}

pub async fn an_expired_hold_is_reclaimed_by_the_next_booking_of_its_date_without_a_sweeper(
    store: Store,
) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 2), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    let s = slot(1, "08:00");
    hold(&store, "h-1", s.clone(), &[1, 2]).await.unwrap();
    // While the hold lives the slot is full.
    assert!(matches!(
        refusal(book(&store, &booking("b-0", s.clone(), &[3])).await),
        Error::SlotFull { remaining: 0, .. }
    ));
    let later = epoch() + Duration::minutes(TTL_MINUTES);
    let a = store
        .book(
            &booking("b-1", s.clone(), &[3, 4]),
            &ConfirmationNumber::generate(),
            later,
        )
        .await
        .unwrap();
    assert_eq!(a.seats(), 2);
    let state = slot_state(&store, &s).await;
    assert_eq!((state.booked, state.held, state.remaining()), (2, 0, 0));
    assert_eq!(store.reclaim_expired_holds(later).await.unwrap().holds, 0);
    assert_audit_clean(&store, 1, 1).await;
}

pub async fn a_held_passport_counts_as_taken_until_the_hold_is_released(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:15", 5), epoch())
        .await
        .unwrap();
    register(&store, 1..=2).await;
    let h = hold(&store, "h-1", slot(1, "08:00"), &[1]).await.unwrap();

    let before = full_snapshot(&store).await;
    // Its receipt backs the hold, so a booking or a second hold with it is refused.
    assert!(matches!(
        refusal(book(&store, &booking("b-1", slot(1, "08:15"), &[1])).await),
        Error::ReceiptInUse { .. }
    ));
    assert!(matches!(
        refusal(hold(&store, "h-2", slot(1, "08:15"), &[2, 1]).await),
        Error::ReceiptInUse { .. }
    ));
    assert_eq!(full_snapshot(&store).await, before);

    let released = store.release_hold(&release(&h.id), epoch()).await.unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(slot_state(&store, &slot(1, "08:00")).await.held, 0);
    // Releasing again answers the same; confirming a released hold is refused.
    assert_eq!(
        store
            .release_hold(&release(&h.id), epoch())
            .await
            .unwrap()
            .status,
        HoldStatus::Released
    );
    let before = full_snapshot(&store).await;
    assert!(matches!(
        refusal(
            store
                .confirm_hold(
                    &confirm(&h.id, "c-1"),
                    &ConfirmationNumber::generate(),
                    epoch()
                )
                .await
        ),
        Error::HoldNotActive { .. }
    ));
    assert!(matches!(
        refusal(
            store
                .confirm_hold(
                    &confirm(&HoldId::generate(), "c-2"),
                    &ConfirmationNumber::generate(),
                    epoch()
                )
                .await
        ),
        Error::HoldNotFound
    ));
    assert_eq!(full_snapshot(&store).await, before);
    book(&store, &booking("b-2", slot(1, "08:15"), &[1]))
        .await
        .unwrap();
    assert_audit_clean(&store, 1, 1).await;
}

pub async fn hold_refusals_name_the_rule_and_change_nothing(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:15", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    book(&store, &booking("b-1", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    store.close_slots(&day(1), Some(t("08:15"))).await.unwrap();
    let before = full_snapshot(&store).await;
    assert!(matches!(
        refusal(hold(&store, "h-1", slot(1, "08:00"), &[2]).await),
        Error::SlotFull { .. }
    ));
    assert!(matches!(
        refusal(hold(&store, "h-2", slot(1, "08:15"), &[2]).await),
        Error::SlotClosed { .. }
    ));
    assert!(matches!(
        refusal(hold(&store, "h-3", slot(1, "09:00"), &[2]).await),
        Error::SlotNotFound { .. }
    ));
    assert!(matches!(
        refusal(hold(&store, "h-4", slot(1, "08:00"), &[9]).await),
        Error::ReceiptNotRegistered { .. } | Error::SlotFull { .. }
    ));
    assert!(matches!(
        refusal(hold(&store, "h-5", slot(1, "08:00"), &[1]).await),
        Error::SlotFull { .. } | Error::ReceiptInUse { .. }
    ));
    assert_eq!(full_snapshot(&store).await, before);
    assert_audit_clean(&store, 1, 1).await;
}

pub async fn rescheduling_moves_the_whole_group_atomically_and_keeps_the_number(store: Store) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:15", 3), epoch())
        .await
        .unwrap();
    register(&store, 1..=2).await;
    let a = book(&store, &booking("b-1", slot(1, "08:00"), &[1, 2]))
        .await
        .unwrap();
    let later = epoch() + Duration::hours(1);
    let moved = store
        .reschedule(&move_to("m-1", &a, slot(2, "08:15")), 2, later)
        .await
        .unwrap();
    assert_eq!(moved.confirmation, a.confirmation);
    assert_eq!(moved.slot, slot(2, "08:15"));
    assert_eq!(moved.history.len(), 1);
    assert_eq!(moved.history[0].from, slot(1, "08:00"));
    assert_eq!(moved.history[0].to, slot(2, "08:15"));
    assert_eq!(moved.history[0].at, later);
    assert_eq!(moved.updated_at, later);
    // Read back as stored, by either applicant.
    let read = store
        .appointment(&a.confirmation, &passport(2))
        .await
        .unwrap();
    assert_eq!(read, moved);
    assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);
    assert_eq!(slot_state(&store, &slot(2, "08:15")).await.booked, 2);
    assert!(all_manifest(&store, &day(1), true).await.is_empty());
    assert_eq!(
        all_manifest(&store, &day(2), false).await,
        vec![moved.clone()]
    );
    // The same request_id replays; a move within one date works too.
    let replay = store
        .reschedule(&move_to("m-1", &a, slot(2, "08:15")), 2, later)
        .await
        .unwrap();
    assert_eq!(replay.slot, slot(2, "08:15"));
    let again = store
        .reschedule(&move_to("m-2", &a, slot(2, "08:00")), 2, later)
        .await
        .unwrap();
    assert_eq!(again.history.len(), 2);
    assert_eq!(slot_state(&store, &slot(2, "08:15")).await.booked, 0);
    assert_eq!(slot_state(&store, &slot(2, "08:00")).await.booked, 2);
    assert_audit_clean(&store, 1, 2).await;
    // Cancelling after the move returns the new slot's seats.
    store
        .cancel(&cancellation("x-1", &a.confirmation, 1), later)
        .await
        .unwrap();
    assert_eq!(slot_state(&store, &slot(2, "08:00")).await.booked, 0);
    assert_audit_clean(&store, 1, 2).await;
}

pub async fn reschedule_refusals_change_nothing_and_the_limit_counts_per_receipt(store: Store) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:30", 2), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    let a = book(&store, &booking("b-1", slot(1, "08:00"), &[1, 2]))
        .await
        .unwrap();
    book(&store, &booking("b-2", slot(1, "08:15"), &[3]))
        .await
        .unwrap();
    store.close_slots(&day(2), Some(t("08:30"))).await.unwrap();
    let limit = 2;
    let before = full_snapshot(&store).await;
    let cases: Vec<(Reschedule, &str)> = vec![
        (move_to("r-1", &a, slot(1, "08:15")), "SlotFull"),
        (move_to("r-2", &a, slot(2, "08:30")), "SlotClosed"),
        (move_to("r-3", &a, slot(2, "09:00")), "SlotNotFound"),
        (move_to("r-4", &a, slot(1, "08:00")), "RescheduleSameSlot"),
        (
            Reschedule {
                passport: passport(4),
                ..move_to("r-5", &a, slot(2, "08:00"))
            },
            "AppointmentNotFound",
        ),
    ];
    for (r, want) in cases {
        let got = refusal(store.reschedule(&r, limit, epoch()).await);
        assert!(format!("{got:?}").starts_with(want), "{want}: {got:?}");
    }
    assert_eq!(full_snapshot(&store).await, before);

    // Two moves are allowed per receipt, the third is refused and changes nothing.
    store
        .reschedule(&move_to("ok-1", &a, slot(2, "08:00")), limit, epoch())
        .await
        .unwrap();
    store
        .reschedule(&move_to("ok-2", &a, slot(2, "08:15")), limit, epoch())
        .await
        .unwrap();
    let before = full_snapshot(&store).await;
    match refusal(
        store
            .reschedule(&move_to("ok-3", &a, slot(1, "08:30")), limit, epoch())
            .await,
    ) {
        Error::RescheduleLimit {
            receipt_number,
            limit,
        } => {
            assert_eq!(receipt_number, receipt_no(1).to_string());
            assert_eq!(limit, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(full_snapshot(&store).await, before);
    // A cancelled appointment cannot move.
    store
        .cancel(&cancellation("x-1", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            store
                .reschedule(&move_to("ok-4", &a, slot(1, "08:30")), 10, epoch())
                .await
        ),
        Error::AppointmentCancelled { .. }
    ));
    assert_audit_clean(&store, 1, 2).await;
}

pub async fn every_lifecycle_step_appears_in_the_event_log_in_order(store: Store) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:00", 5), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let start = store.events(EventStart::Latest, 10).await.unwrap();
    assert!(start.events.is_empty());

    let h1 = hold(&store, "h-1", slot(1, "08:00"), &[1]).await.unwrap();
    store.release_hold(&release(&h1.id), epoch()).await.unwrap();
    let h2 = hold(&store, "h-2", slot(1, "08:00"), &[1, 2])
        .await
        .unwrap();
    let a = store
        .confirm_hold(
            &confirm(&h2.id, "c-2"),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    store
        .reschedule(&move_to("m-1", &a, slot(2, "08:00")), 2, epoch())
        .await
        .unwrap();
    store
        .cancel(&cancellation("x-1", &a.confirmation, 1), epoch())
        .await
        .unwrap();
    let h3 = hold(&store, "h-3", slot(1, "08:00"), &[3]).await.unwrap();
    store
        .reclaim_expired_holds(epoch() + Duration::minutes(TTL_MINUTES))
        .await
        .unwrap();

    let after = store
        .events(EventStart::After(start.next), 1000)
        .await
        .unwrap();
    let kinds: Vec<_> = after
        .events
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "opened")
        .collect();
    assert_eq!(
        kinds,
        [
            "held",
            "hold_released",
            "held",
            "booked",
            "moved",
            "cancelled",
            "held",
            "hold_expired"
        ]
    );
    let ids: Vec<_> = after.events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids.iter().all(|id| *id > start.next));
    let f = |i: usize, k: &str| after.events[i].field(k).unwrap_or_default().to_owned();
    assert_eq!(f(0, "hold_ref"), h1.id.reference());
    assert_eq!(f(3, "confirmation"), a.confirmation.to_string());
    assert_eq!(f(3, "hold_ref"), h2.id.reference());
    assert_eq!(f(4, "from"), slot(1, "08:00").to_string());
    assert_eq!(f(4, "to"), slot(2, "08:00").to_string());
    assert_eq!(f(7, "hold_ref"), h3.id.reference());
    // Paging: from the last id nothing is left; a small limit pages in order.
    let rest = store
        .events(EventStart::After(after.next), 10)
        .await
        .unwrap();
    assert!(rest.events.is_empty());
    assert_eq!(rest.next, after.next);
    let first_two = store
        .events(EventStart::After(start.next), 2)
        .await
        .unwrap();
    assert_eq!(first_two.events, after.events[..2].to_vec());
    assert_eq!(first_two.next, after.events[1].id);
}

pub async fn the_manifest_pages_stably_while_bookings_land(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "11:45", 10), epoch())
        .await
        .unwrap();
    register(&store, 1..=200).await;
    // 60 booked before paging starts, 140 while it runs.
    for i in 1..=60u32 {
        let time = SlotTime::from_minutes(480 + 15 * (i % 16) as u16).unwrap();
        book(&store, &booking(&format!("pre-{i}"), day(1).at(time), &[i]))
            .await
            .unwrap();
    }
    let before: HashSet<_> = all_manifest(&store, &day(1), false)
        .await
        .into_iter()
        .map(|a| a.confirmation)
        .collect();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 61..=200u32 {
                let time = SlotTime::from_minutes(480 + 15 * (i % 16) as u16).unwrap();
                let _ = book(
                    &store,
                    &booking(&format!("live-{i}"), day(1).at(time), &[i]),
                )
                .await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .manifest(&ManifestQuery {
                day: day(1),
                after: after.clone(),
                limit: 7,
                include_cancelled: false,
            })
            .await
            .unwrap();
        seen.extend(page.appointments.iter().map(|a| ManifestCursor {
            time: a.slot.time,
            confirmation: a.confirmation.clone(),
        }));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    // Strictly ordered (so nothing twice), and everything booked before paging is there.
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let seen_set: HashSet<_> = seen.iter().map(|c| c.confirmation.clone()).collect();
    assert!(before.is_subset(&seen_set));
    assert_eq!(all_manifest(&store, &day(1), false).await.len(), 160);
    assert_audit_clean(&store, 1, 1).await;
}

/// Many clients hold, confirm, release, book, cancel and reschedule on three hot slots at once;
/// afterwards the invariant holds and every acknowledged outcome is what the store shows.
pub async fn a_storm_of_lifecycle_operations_on_hot_slots_keeps_the_invariant(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:30", 6), epoch())
        .await
        .unwrap();
    let clients = 48u32;
    register(&store, 1..=clients).await;
    let hot = [slot(1, "08:00"), slot(1, "08:15"), slot(1, "08:30")];
    let tasks: Vec<_> = (1..=clients)
        .map(|i| {
            let store = store.clone();
            let hot = hot.clone();
            tokio::spawn(async move {
                let s = hot[(i % 3) as usize].clone();
                let other = hot[((i + 1) % 3) as usize].clone();
                // What this client ends with: Some(appointment) it was told is booked.
                let mut mine: Option<Appointment> = None;
                match i % 4 {
                    0 => {
                        if let Ok(a) = book(&store, &booking(&format!("b-{i}"), s, &[i])).await {
                            mine = Some(a);
                        }
                    }
                    1 => {
                        if let Ok(h) = hold(&store, &format!("h-{i}"), s, &[i]).await {
                            let c = HoldConfirmation {
                                request_id: RequestId::parse(&format!("c-{i}")).unwrap(),
                                hold: h.id,
                                admission: None,
                            };
                            if let Ok(a) = store
                                .confirm_hold(&c, &ConfirmationNumber::generate(), epoch())
                                .await
                            {
                                mine = Some(a);
                            }
                        }
                    }
                    2 => {
                        if let Ok(h) = hold(&store, &format!("h-{i}"), s, &[i]).await {
                            store.release_hold(&release(&h.id), epoch()).await.unwrap();
                        }
                    }
                    _ => {
                        if let Ok(a) = book(&store, &booking(&format!("b-{i}"), s, &[i])).await {
                            mine = Some(a.clone());
                            let r = move_to(&format!("m-{i}"), &a, other);
                            if let Ok(moved) = store.reschedule(&r, 2, epoch()).await {
                                mine = Some(moved);
                            }
                            if i % 8 == 3 {
                                store
                                    .cancel(
                                        &cancellation(&format!("x-{i}"), &a.confirmation, i),
                                        epoch(),
                                    )
                                    .await
                                    .unwrap();
                                mine = None;
                            }
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        if let Some(a) = task.await.unwrap() {
            acknowledged.push(a);
        }
    }
    assert!(!acknowledged.is_empty());
    assert_audit_clean(&store, 1, 1).await;
    let mut booked_by_slot: BTreeMap<SlotRef, u32> = BTreeMap::new();
    for a in &acknowledged {
        let stored = store
            .appointment(&a.confirmation, &a.applicants[0].passport)
            .await
            .unwrap();
        assert_eq!(stored.status, AppointmentStatus::Booked);
        assert_eq!(stored.slot, a.slot, "{a:?}");
        *booked_by_slot.entry(a.slot.clone()).or_default() += a.seats();
    }
    for s in &hot {
        let state = slot_state(&store, s).await;
        assert_eq!(state.held, 0);
        assert!(state.booked <= state.capacity);
        assert_eq!(
            state.booked,
            booked_by_slot.get(s).copied().unwrap_or(0),
            "{s}"
        );
    }
    let manifest = all_manifest(&store, &day(1), false).await;
    assert_eq!(manifest.len(), acknowledged.len());
}

pub async fn capacity_never_goes_below_booked_plus_held(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 4), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let s = slot(1, "08:00");
    book(&store, &booking("b-1", s.clone(), &[1]))
        .await
        .unwrap();
    hold(&store, "h-1", s.clone(), &[2, 3]).await.unwrap();
    let before = full_snapshot(&store).await;
    match refusal(store.set_capacity(&s, 2, epoch()).await) {
        Error::CapacityBelowBooked {
            capacity, booked, ..
        } => assert_eq!((capacity, booked), (2, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(full_snapshot(&store).await, before);
    let report = store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    assert_eq!(
        report.kept_at_booked,
        vec![SlotState {
            slot: s.clone(),
            capacity: 3,
            booked: 1,
            held: 2,
            closed: false
        }]
    );
    let state = store.set_capacity(&s, 3, epoch()).await.unwrap();
    assert_eq!((state.capacity, state.booked, state.held), (3, 1, 2));
    assert_eq!(state.remaining(), 0);
    assert_audit_clean(&store, 1, 1).await;
}
