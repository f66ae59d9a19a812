//! One conformance suite for every `Inventory` backend: the same test bodies (`cases`) run
//! against `MemoryStore` (mod `memory`), `RedisStore` on the binary's shared redis-server (mod
//! `redis`) and on its shared Redis Cluster (mod `cluster`), each case in its own key space
//! (`backend_matrix!`, tests/support/backend.rs), so they never drift apart. The Redis half
//! needs `redis-server` on PATH and fails loudly without it.

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Duration;

use slotd::domain::rules::{
    Booking, Cancellation, DateRange, ManifestCursor, ManifestQuery, OpenPlan,
};
use slotd::domain::types::{
    Applicant, Appointment, AppointmentStatus, CategoryId, ConfirmationNumber, Currency, DayRef,
    Money, PostId, Receipt, RequestId, SlotRef, SlotState, SlotTime,
};
use slotd::domain::Error;
use slotd::store::{Inventory, StoreError};

/// Runs a case on one backend (see `backend_matrix!`).
async fn run(backend: support::backend::Backend, case: impl AsyncFnOnce(Store)) {
    case(backend.store()).await;
}

use cases::*;

backend_matrix!(
    run;
    opening_creates_slots_and_reopening_resizes_without_going_below_booked,
    set_capacity_refuses_below_booked_and_unknown_slots,
    closing_one_slot_or_a_whole_day_counts_the_slots_that_were_open,
    listing_a_range_returns_every_slot_in_date_and_time_order,
    booking_takes_the_seats_and_the_appointment_is_readable_by_its_applicants,
    a_group_with_one_bad_receipt_books_nobody_and_keeps_the_seats,
    every_refusal_names_the_rule_and_changes_nothing,
    a_repeated_request_id_replays_the_first_appointment_and_other_content_is_refused,
    cancelling_returns_the_seats_exactly_once,
    receipts_freed_by_a_cancellation_back_a_new_booking,
    receipts_expire_365_days_after_payment,
    manifest_pages_are_stable_ordered_and_skip_cancelled_unless_asked,
    a_book_cancel_loop_leaves_only_live_appointments_in_the_manifest,
    a_passed_waitlist_entry_is_retired_and_its_passport_can_join_again,
    registering_a_receipt_is_idempotent_and_a_different_one_conflicts,
    two_hundred_concurrent_bookings_on_24_seats_book_exactly_24,
    a_hold_takes_the_seats_at_once_and_confirming_it_books_them,
    an_expired_hold_returns_its_seats_exactly_once_and_confirming_it_books_nothing,
    an_expired_hold_is_reclaimed_by_the_next_booking_of_its_date_without_a_sweeper,
    a_held_passport_counts_as_taken_until_the_hold_is_released,
    hold_refusals_name_the_rule_and_change_nothing,
    rescheduling_moves_the_whole_group_atomically_and_keeps_the_number,
    reschedule_refusals_change_nothing_and_the_limit_counts_per_receipt,
    every_lifecycle_step_appears_in_the_event_log_in_order,
    the_manifest_pages_stably_while_bookings_land,
    a_storm_of_lifecycle_operations_on_hot_slots_keeps_the_invariant,
    capacity_never_goes_below_booked_plus_held,
    three_waiters_and_a_cancellation_get_offers_in_join_order,
    an_expired_offer_passes_to_the_next_entry,
    seats_of_holds_reclaimed_together_go_to_the_group_ahead_in_line,
    an_expired_hold_on_a_date_with_a_waitlist_counts_as_held_until_the_sweep,
    a_declined_offer_passes_on_and_the_decliner_keeps_its_place,
    a_capacity_raise_and_newly_opened_slots_go_to_waiters_first,
    offers_respect_times_ranges_groups_and_the_share,
    joining_checks_receipts_passports_and_request_ids,
    an_entry_that_booked_elsewhere_is_cancelled_and_leaving_passes_an_offer_on,
    a_public_storm_during_the_release_never_takes_an_offered_seat,
    offers_appear_in_the_event_log,
    a_booked_group_waits_for_an_earlier_date_and_accepting_moves_its_appointment,
    moving_entries_are_checked_at_join_and_when_seats_come,
    a_hold_whose_claims_a_later_clock_took_is_never_confirmed,
    a_hold_confirmed_just_before_its_expiry_keeps_its_claims_against_a_later_clock,
    a_hold_whose_claims_were_taken_and_freed_again_stays_expired,
    no_event_carries_a_hold_id_only_its_reference,
    joining_tells_a_passport_waits_only_to_whoever_shows_its_receipt,
    a_refused_moving_offer_frees_its_seats_at_once_and_ends_its_entry,
    cancelling_an_appointment_ends_the_entry_that_wanted_to_move_it,
    a_passport_whose_appointment_date_passed_books_again_after_the_sweep,
    a_past_appointment_reads_until_its_retention_and_not_found_after,
    past_appointments_retire_in_bounded_batches_and_a_moved_one_waits_for_its_date,
    every_counted_step_checks_and_counts_its_admission,
    a_refused_step_counts_nothing_and_a_booked_admission_makes_no_step,
);

mod admission;
mod claims;
mod lifecycle;
mod retention;
mod waitlist;

// ---- fixtures ----

type Store = Arc<dyn Inventory>;

/// 2030-01-07 00:00 UTC, a Monday.
use support::domain::{applicant, passport, receipt_number as receipt_no};
use support::epoch;

fn post() -> PostId {
    PostId::parse("BEIJING").unwrap()
}

fn category() -> CategoryId {
    CategoryId::parse("ALL_OTHERS").unwrap()
}

fn day(n: i64) -> DayRef {
    DayRef {
        post: post(),
        category: category(),
        date: (epoch() + Duration::days(n)).date_naive(),
    }
}

fn t(text: &str) -> SlotTime {
    SlotTime::parse(text).unwrap()
}

fn slot(n: i64, time: &str) -> SlotRef {
    day(n).at(t(time))
}

fn range(from: i64, to: i64) -> DateRange {
    DateRange::new(day(from).date, day(to).date).unwrap()
}

fn plan(from: i64, to: i64, first: &str, last: &str, seats: u32) -> OpenPlan {
    support::domain::plan(range(from, to), first, last, seats)
}

/// Receipt R{i} for passport P{i}, paid a day before the epoch (with sub-second precision, which
/// must survive the store).
fn receipt(i: u32) -> Receipt {
    support::domain::receipt(
        i,
        epoch() - Duration::days(1) + Duration::nanoseconds(123_456_789),
    )
}

async fn register(store: &Store, ids: impl IntoIterator<Item = u32>) {
    for i in ids {
        store.register_receipt(&receipt(i)).await.unwrap();
    }
}

fn booking(request_id: &str, slot: SlotRef, ids: &[u32]) -> Booking {
    Booking::new(
        RequestId::parse(request_id).unwrap(),
        slot,
        ids.iter().map(|i| applicant(*i)).collect(),
    )
    .unwrap()
}

fn cancellation(request_id: &str, confirmation: &ConfirmationNumber, p: u32) -> Cancellation {
    Cancellation {
        request_id: RequestId::parse(request_id).unwrap(),
        confirmation: confirmation.clone(),
        passport: passport(p),
        admission: None,
    }
}

async fn book(store: &Store, b: &Booking) -> Result<Appointment, StoreError> {
    store
        .book(b, &ConfirmationNumber::generate(), epoch())
        .await
}

#[track_caller]
fn refusal<T: std::fmt::Debug>(result: Result<T, StoreError>) -> Error {
    match result {
        Err(StoreError::Domain(e)) => e,
        other => panic!("expected a domain refusal, got {other:?}"),
    }
}

async fn slot_state(store: &Store, s: &SlotRef) -> SlotState {
    store
        .slots(
            &s.post,
            &s.category,
            DateRange::new(s.date, s.date).unwrap(),
        )
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.slot == *s)
        .expect("slot listed")
}

/// Everything observable about days 0..=10: slots and full manifests.
async fn snapshot(store: &Store) -> (Vec<SlotState>, Vec<Vec<Appointment>>) {
    let slots = store
        .slots(&post(), &category(), range(0, 10))
        .await
        .unwrap();
    let mut manifests = Vec::new();
    for n in 0..=10 {
        manifests.push(all_manifest(store, &day(n), true).await);
    }
    (slots, manifests)
}

async fn all_manifest(store: &Store, d: &DayRef, include_cancelled: bool) -> Vec<Appointment> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .manifest(&ManifestQuery {
                day: d.clone(),
                after: after.clone(),
                limit: 2,
                include_cancelled,
            })
            .await
            .unwrap();
        out.extend(page.appointments);
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

async fn assert_audit_clean(store: &Store, from: i64, to: i64) {
    let report = store
        .audit(&post(), &category(), range(from, to))
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

mod cases {
    use super::*;

    pub use super::admission::*;
    pub use super::claims::*;
    pub use super::lifecycle::*;
    pub use super::retention::*;
    pub use super::waitlist::*;

    pub async fn opening_creates_slots_and_reopening_resizes_without_going_below_booked(
        store: Store,
    ) {
        let report = store
            .open_slots(&plan(1, 1, "08:00", "08:45", 2), epoch())
            .await
            .unwrap();
        assert_eq!((report.opened, report.updated), (4, 0));
        assert!(report.kept_at_booked.is_empty());
        register(&store, [1, 2]).await;
        book(&store, &booking("b1", slot(1, "08:00"), &[1, 2]))
            .await
            .unwrap();

        let report = store
            .open_slots(&plan(1, 2, "08:00", "08:45", 1), epoch())
            .await
            .unwrap();
        assert_eq!((report.opened, report.updated), (4, 4));
        assert_eq!(
            report.kept_at_booked,
            vec![SlotState {
                slot: slot(1, "08:00"),
                capacity: 2,
                booked: 2,
                held: 0,
                closed: false
            }]
        );
        let caps: Vec<_> = store
            .slots(&post(), &category(), range(1, 1))
            .await
            .unwrap()
            .iter()
            .map(|s| (s.capacity, s.booked))
            .collect();
        assert_eq!(caps, [(2, 2), (1, 0), (1, 0), (1, 0)]);

        assert_eq!(store.close_slots(&day(1), None).await.unwrap(), 4);
        assert!(store
            .slots(&post(), &category(), range(1, 1))
            .await
            .unwrap()
            .iter()
            .all(|s| s.closed));
        let report = store
            .open_slots(&plan(1, 1, "08:00", "08:15", 3), epoch())
            .await
            .unwrap();
        assert_eq!((report.opened, report.updated), (0, 2));
        let states = store
            .slots(&post(), &category(), range(1, 1))
            .await
            .unwrap();
        let open: Vec<_> = states
            .iter()
            .map(|s| (s.slot.time, s.closed, s.capacity))
            .collect();
        assert_eq!(
            open,
            [
                (t("08:00"), false, 3),
                (t("08:15"), false, 3),
                (t("08:30"), true, 1),
                (t("08:45"), true, 1)
            ]
        );
        assert_audit_clean(&store, 0, 3).await;
    }

    pub async fn set_capacity_refuses_below_booked_and_unknown_slots(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 5), epoch())
            .await
            .unwrap();
        register(&store, [1, 2, 3]).await;
        book(&store, &booking("b1", slot(1, "08:00"), &[1, 2, 3]))
            .await
            .unwrap();
        assert_eq!(
            refusal(store.set_capacity(&slot(1, "08:00"), 2, epoch()).await),
            Error::CapacityBelowBooked {
                slot: slot(1, "08:00"),
                capacity: 2,
                booked: 3
            }
        );
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.capacity, 5);
        assert_eq!(
            refusal(store.set_capacity(&slot(1, "09:00"), 2, epoch()).await),
            Error::SlotNotFound {
                slot: slot(1, "09:00")
            }
        );
        assert_eq!(
            refusal(store.set_capacity(&slot(2, "08:00"), 2, epoch()).await),
            Error::SlotNotFound {
                slot: slot(2, "08:00")
            }
        );
        let state = store
            .set_capacity(&slot(1, "08:00"), 3, epoch())
            .await
            .unwrap();
        assert_eq!((state.capacity, state.booked, state.closed), (3, 3, false));
        let state = store
            .set_capacity(&slot(1, "08:00"), 40, epoch())
            .await
            .unwrap();
        assert_eq!(state, slot_state(&store, &slot(1, "08:00")).await);
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn closing_one_slot_or_a_whole_day_counts_the_slots_that_were_open(store: Store) {
        assert_eq!(store.close_slots(&day(1), None).await.unwrap(), 0);
        assert_eq!(
            refusal(store.close_slots(&day(1), Some(t("08:00"))).await),
            Error::SlotNotFound {
                slot: slot(1, "08:00")
            }
        );
        store
            .open_slots(&plan(1, 1, "08:00", "08:45", 2), epoch())
            .await
            .unwrap();
        assert_eq!(
            refusal(store.close_slots(&day(1), Some(t("09:00"))).await),
            Error::SlotNotFound {
                slot: slot(1, "09:00")
            }
        );
        assert_eq!(
            store.close_slots(&day(1), Some(t("08:15"))).await.unwrap(),
            1
        );
        assert_eq!(
            store.close_slots(&day(1), Some(t("08:15"))).await.unwrap(),
            0
        );
        assert!(slot_state(&store, &slot(1, "08:15")).await.closed);
        assert!(!slot_state(&store, &slot(1, "08:00")).await.closed);
        assert_eq!(store.close_slots(&day(1), None).await.unwrap(), 3);
        assert_eq!(store.close_slots(&day(1), None).await.unwrap(), 0);
    }

    pub async fn listing_a_range_returns_every_slot_in_date_and_time_order(store: Store) {
        store
            .open_slots(&plan(3, 5, "10:00", "10:30", 4), epoch())
            .await
            .unwrap();
        store
            .open_slots(&plan(4, 4, "08:00", "08:00", 4), epoch())
            .await
            .unwrap();
        let other = OpenPlan {
            category: CategoryId::parse("STUDENTS").unwrap(),
            ..plan(3, 5, "08:00", "08:00", 4)
        };
        store.open_slots(&other, epoch()).await.unwrap();

        let all = store
            .slots(&post(), &category(), range(0, 365))
            .await
            .unwrap();
        let listed: Vec<_> = all.iter().map(|s| s.slot.clone()).collect();
        let mut expected = Vec::new();
        for n in 3..=5 {
            if n == 4 {
                expected.push(slot(4, "08:00"));
            }
            for time in ["10:00", "10:15", "10:30"] {
                expected.push(slot(n, time));
            }
        }
        assert_eq!(listed, expected);
        assert!(all
            .iter()
            .all(|s| s.capacity == 4 && s.booked == 0 && !s.closed));
        assert_eq!(
            store
                .slots(&post(), &category(), range(4, 4))
                .await
                .unwrap()
                .len(),
            4
        );
        assert!(store
            .slots(&post(), &category(), range(6, 9))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .slots(
                    &post(),
                    &CategoryId::parse("STUDENTS").unwrap(),
                    range(0, 9)
                )
                .await
                .unwrap()
                .len(),
            3
        );
        let report = store
            .audit(&post(), &category(), range(0, 365))
            .await
            .unwrap();
        assert_eq!(report.slots_checked, 10);
        assert!(report.violations.is_empty());
    }

    pub async fn booking_takes_the_seats_and_the_appointment_is_readable_by_its_applicants(
        store: Store,
    ) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:15", 3), epoch())
            .await
            .unwrap();
        register(&store, [1, 2]).await;
        let conf = ConfirmationNumber::generate();
        let b = booking("b1", slot(1, "08:15"), &[1, 2]);
        let a = store.book(&b, &conf, epoch()).await.unwrap();
        assert_eq!(a.confirmation, conf);
        assert_eq!(a.slot, slot(1, "08:15"));
        assert_eq!(a.applicants, vec![applicant(1), applicant(2)]);
        assert_eq!(a.status, AppointmentStatus::Booked);
        assert_eq!((a.created_at, a.updated_at), (epoch(), epoch()));

        assert_eq!(store.appointment(&conf, &passport(1)).await.unwrap(), a);
        assert_eq!(store.appointment(&conf, &passport(2)).await.unwrap(), a);
        assert_eq!(
            refusal(store.appointment(&conf, &passport(3)).await),
            Error::AppointmentNotFound
        );
        assert_eq!(
            refusal(
                store
                    .appointment(&ConfirmationNumber::generate(), &passport(1))
                    .await
            ),
            Error::AppointmentNotFound
        );
        let s = slot_state(&store, &slot(1, "08:15")).await;
        assert_eq!((s.capacity, s.booked, s.remaining()), (3, 2, 1));
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);
        assert_eq!(all_manifest(&store, &day(1), false).await, vec![a]);
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn a_group_with_one_bad_receipt_books_nobody_and_keeps_the_seats(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 5), epoch())
            .await
            .unwrap();
        register(&store, [1, 2]).await;
        let before = snapshot(&store).await;
        assert_eq!(
            refusal(book(&store, &booking("g1", slot(1, "08:00"), &[1, 2, 3])).await),
            Error::ReceiptNotRegistered {
                receipt_number: receipt_no(3).to_string()
            }
        );
        assert_eq!(snapshot(&store).await, before);
        // Nobody of the group was marked as booked: both book now.
        book(&store, &booking("g2", slot(1, "08:00"), &[1, 2]))
            .await
            .unwrap();
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 2);
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn every_refusal_names_the_rule_and_changes_nothing(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:15", 2), epoch())
            .await
            .unwrap();
        store.close_slots(&day(1), Some(t("08:15"))).await.unwrap();
        register(&store, [1, 2, 3, 4, 5]).await;
        // R9 is paid for P8's passport.
        store
            .register_receipt(&Receipt {
                passport: passport(8),
                ..receipt(9)
            })
            .await
            .unwrap();
        let first = book(&store, &booking("ok1", slot(1, "08:00"), &[1]))
            .await
            .unwrap();
        // P1 pays again (R101) while R1 backs the active appointment.
        store
            .register_receipt(&Receipt {
                number: receipt_no(101),
                ..receipt(1)
            })
            .await
            .unwrap();

        let before = snapshot(&store).await;
        let cases: Vec<(Booking, Error)> = vec![
            (
                booking("x1", slot(1, "09:00"), &[2]),
                Error::SlotNotFound {
                    slot: slot(1, "09:00"),
                },
            ),
            (
                booking("x2", slot(2, "08:00"), &[2]),
                Error::SlotNotFound {
                    slot: slot(2, "08:00"),
                },
            ),
            (
                booking("x3", slot(1, "08:15"), &[2]),
                Error::SlotClosed {
                    slot: slot(1, "08:15"),
                },
            ),
            (
                booking("x4", slot(1, "08:00"), &[2, 3]),
                Error::SlotFull {
                    slot: slot(1, "08:00"),
                    requested: 2,
                    remaining: 1,
                },
            ),
            (
                booking("x5", slot(1, "08:00"), &[7]),
                Error::ReceiptNotRegistered {
                    receipt_number: receipt_no(7).to_string(),
                },
            ),
            (
                {
                    let mut b = booking("x6", slot(1, "08:00"), &[2]);
                    b.applicants[0].receipt = receipt_no(9);
                    b
                },
                Error::ReceiptPassportMismatch {
                    receipt_number: receipt_no(9).to_string(),
                },
            ),
            (
                booking("x7", slot(1, "08:00"), &[1]),
                Error::ReceiptInUse {
                    receipt_number: receipt_no(1).to_string(),
                },
            ),
            (
                {
                    let mut b = booking("x8", slot(1, "08:00"), &[1]);
                    b.applicants[0].receipt = receipt_no(101);
                    b
                },
                Error::ApplicantAlreadyBooked {
                    passport_number: passport(1).to_string(),
                },
            ),
        ];
        for (b, expected) in cases {
            assert_eq!(
                refusal(book(&store, &b).await),
                expected,
                "{}",
                b.request_id
            );
            assert_eq!(snapshot(&store).await, before, "{}", b.request_id);
        }

        // A receipt past its 365 days.
        let late = receipt(2).expires_at() + Duration::seconds(1);
        let b = booking("x9", slot(1, "08:00"), &[2]);
        assert_eq!(
            refusal(store.book(&b, &ConfirmationNumber::generate(), late).await),
            Error::ReceiptExpired {
                receipt_number: receipt_no(2).to_string(),
                expired_at: slotd::domain::types::format_instant(receipt(2).expires_at()),
            }
        );
        assert_eq!(snapshot(&store).await, before);

        // A freshly drawn confirmation number that exists already.
        let b = booking("x10", slot(1, "08:00"), &[2]);
        assert!(matches!(
            store.book(&b, &first.confirmation, epoch()).await,
            Err(StoreError::ConfirmationTaken)
        ));
        assert_eq!(snapshot(&store).await, before);

        // Refusals are not remembered: the same request_id books once the rule allows it.
        store
            .set_capacity(&slot(1, "08:00"), 3, epoch())
            .await
            .unwrap();
        book(&store, &booking("x4", slot(1, "08:00"), &[2, 3]))
            .await
            .unwrap();
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 3);
        assert_audit_clean(&store, 0, 10).await;
    }

    pub async fn a_repeated_request_id_replays_the_first_appointment_and_other_content_is_refused(
        store: Store,
    ) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 4), epoch())
            .await
            .unwrap();
        register(&store, [1, 2, 3]).await;
        let b = booking("same", slot(1, "08:00"), &[1, 2]);
        let first = book(&store, &b).await.unwrap();
        let again = book(&store, &b).await.unwrap();
        assert_eq!(again, first);
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 2);
        assert_eq!(all_manifest(&store, &day(1), true).await.len(), 1);

        assert_eq!(
            refusal(book(&store, &booking("same", slot(1, "08:00"), &[3])).await),
            Error::RequestIdReused {
                request_id: "same".into()
            }
        );
        // The replay answers the appointment as it is now.
        store
            .cancel(&cancellation("c1", &first.confirmation, 1), epoch())
            .await
            .unwrap();
        let replay = book(&store, &b).await.unwrap();
        assert_eq!(replay.confirmation, first.confirmation);
        assert_eq!(replay.status, AppointmentStatus::Cancelled);
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);

        // After the remembering window the id is free again.
        let later = epoch() + Duration::seconds(slotd::store::IDEMPOTENCY_TTL_SECS + 1);
        let fresh = store
            .book(&b, &ConfirmationNumber::generate(), later)
            .await
            .unwrap();
        assert_ne!(fresh.confirmation, first.confirmation);
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn cancelling_returns_the_seats_exactly_once(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 3), epoch())
            .await
            .unwrap();
        register(&store, [1, 2, 3]).await;
        let a = book(&store, &booking("b1", slot(1, "08:00"), &[1, 2]))
            .await
            .unwrap();
        assert_eq!(
            refusal(
                store
                    .cancel(&cancellation("c0", &a.confirmation, 3), epoch())
                    .await
            ),
            Error::AppointmentNotFound
        );
        assert_eq!(
            refusal(
                store
                    .cancel(
                        &cancellation("c0", &ConfirmationNumber::generate(), 1),
                        epoch()
                    )
                    .await
            ),
            Error::AppointmentNotFound
        );
        let at = epoch() + Duration::minutes(5);
        let cancelled = store
            .cancel(&cancellation("c1", &a.confirmation, 2), at)
            .await
            .unwrap();
        assert_eq!(cancelled.status, AppointmentStatus::Cancelled);
        assert_eq!((cancelled.created_at, cancelled.updated_at), (epoch(), at));
        assert_eq!(cancelled.applicants, a.applicants);
        assert_eq!(
            store
                .appointment(&a.confirmation, &passport(1))
                .await
                .unwrap(),
            cancelled
        );
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);

        assert_eq!(
            refusal(
                store
                    .cancel(&cancellation("c2", &a.confirmation, 1), at)
                    .await
            ),
            Error::AppointmentCancelled {
                confirmation_number: a.confirmation.to_string()
            }
        );
        let replay = store
            .cancel(
                &cancellation("c1", &a.confirmation, 2),
                at + Duration::minutes(1),
            )
            .await
            .unwrap();
        assert_eq!(replay, cancelled);
        assert_eq!(
            refusal(
                store
                    .cancel(&cancellation("c1", &a.confirmation, 1), at)
                    .await
            ),
            Error::RequestIdReused {
                request_id: "c1".into()
            }
        );
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn receipts_freed_by_a_cancellation_back_a_new_booking(store: Store) {
        store
            .open_slots(&plan(1, 2, "08:00", "08:00", 2), epoch())
            .await
            .unwrap();
        register(&store, [1]).await;
        let a = book(&store, &booking("b1", slot(1, "08:00"), &[1]))
            .await
            .unwrap();
        assert_eq!(
            refusal(book(&store, &booking("b2", slot(2, "08:00"), &[1])).await),
            Error::ReceiptInUse {
                receipt_number: receipt_no(1).to_string()
            }
        );
        store
            .cancel(&cancellation("c1", &a.confirmation, 1), epoch())
            .await
            .unwrap();
        let b = book(&store, &booking("b2", slot(2, "08:00"), &[1]))
            .await
            .unwrap();
        assert_eq!(b.status, AppointmentStatus::Booked);
        assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);
        assert_eq!(slot_state(&store, &slot(2, "08:00")).await.booked, 1);
        assert_audit_clean(&store, 0, 3).await;
    }

    pub async fn receipts_expire_365_days_after_payment(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 2), epoch())
            .await
            .unwrap();
        register(&store, [1, 2]).await;
        let expires = receipt(1).expires_at();
        let b = booking("late", slot(1, "08:00"), &[1]);
        assert_eq!(
            refusal(
                store
                    .book(&b, &ConfirmationNumber::generate(), expires)
                    .await
            ),
            Error::ReceiptExpired {
                receipt_number: receipt_no(1).to_string(),
                expired_at: slotd::domain::types::format_instant(expires),
            }
        );
        let just_before = expires - Duration::seconds(1);
        let b = booking("in-time", slot(1, "08:00"), &[2]);
        store
            .book(&b, &ConfirmationNumber::generate(), just_before)
            .await
            .unwrap();
        assert_audit_clean(&store, 1, 1).await;
    }

    pub async fn manifest_pages_are_stable_ordered_and_skip_cancelled_unless_asked(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:15", 10), epoch())
            .await
            .unwrap();
        register(&store, 1..=9).await;
        let mut booked = Vec::new();
        for i in 1..=7u32 {
            let time = if i % 2 == 0 { "08:00" } else { "08:15" };
            booked.push(
                book(&store, &booking(&format!("b{i}"), slot(1, time), &[i]))
                    .await
                    .unwrap(),
            );
        }
        let mut expected = booked.clone();
        expected.sort_by_key(|a| (a.slot.time, a.confirmation.clone()));

        // Page by page (size 3) while two more bookings arrive after the first page.
        let first = store
            .manifest(&ManifestQuery {
                day: day(1),
                after: None,
                limit: 3,
                include_cancelled: false,
            })
            .await
            .unwrap();
        assert_eq!(first.appointments, expected[..3]);
        let cursor = first.next.clone().expect("a next page");
        assert_eq!(
            cursor,
            ManifestCursor {
                time: expected[2].slot.time,
                confirmation: expected[2].confirmation.clone()
            }
        );
        for i in 8..=9u32 {
            book(&store, &booking(&format!("b{i}"), slot(1, "08:15"), &[i]))
                .await
                .unwrap();
        }
        let mut seen: Vec<Appointment> = first.appointments;
        let mut after = Some(cursor);
        while let Some(c) = after {
            let page = store
                .manifest(&ManifestQuery {
                    day: day(1),
                    after: Some(c),
                    limit: 3,
                    include_cancelled: false,
                })
                .await
                .unwrap();
            assert!(page.appointments.len() <= 3);
            seen.extend(page.appointments);
            after = page.next;
        }
        let unique: HashSet<_> = seen.iter().map(|a| a.confirmation.clone()).collect();
        assert_eq!(unique.len(), seen.len(), "no appointment twice");
        for a in &expected {
            assert!(
                unique.contains(&a.confirmation),
                "{} missing",
                a.confirmation
            );
        }
        let order: Vec<_> = seen
            .iter()
            .map(|a| (a.slot.time, a.confirmation.clone()))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);

        // Cancelled appointments appear only when asked for.
        let gone = &expected[1];
        store
            .cancel(
                &cancellation("c1", &gone.confirmation, 0).with_passport(gone),
                epoch(),
            )
            .await
            .unwrap();
        let active = all_manifest(&store, &day(1), false).await;
        assert_eq!(active.len(), 8);
        assert!(active.iter().all(|a| a.confirmation != gone.confirmation));
        let everything = all_manifest(&store, &day(1), true).await;
        assert_eq!(everything.len(), 9);
        assert!(everything.iter().any(
            |a| a.confirmation == gone.confirmation && a.status == AppointmentStatus::Cancelled
        ));

        // A page exactly as long as what is left has no next page; an empty day has nothing.
        let exact = store
            .manifest(&ManifestQuery {
                day: day(1),
                after: None,
                limit: 9,
                include_cancelled: true,
            })
            .await
            .unwrap();
        assert_eq!((exact.appointments.len(), exact.next), (9, None));
        let empty = store
            .manifest(&ManifestQuery {
                day: day(2),
                after: None,
                limit: 5,
                include_cancelled: true,
            })
            .await
            .unwrap();
        assert!(empty.appointments.is_empty() && empty.next.is_none());
        assert_audit_clean(&store, 1, 1).await;
    }

    /// A book/cancel loop leaves no cancelled member in the day's manifest (they move to the
    /// day's cancelled index): a listing without cancelled ones finds the live appointment in
    /// one call, a cancelled appointment still reads CANCELLED, and listing with cancelled ones
    /// pages through all of them in order. Before, the loop grew the manifest by one member per
    /// iteration and the first page came back empty (budget spent on cancelled members).
    pub async fn a_book_cancel_loop_leaves_only_live_appointments_in_the_manifest(store: Store) {
        use slotd::store::MANIFEST_SCAN_BUDGET;
        store
            .open_slots(&plan(1, 1, "08:00", "08:15", 2), epoch())
            .await
            .unwrap();
        register(&store, [1, 2]).await;
        let cancelled = MANIFEST_SCAN_BUDGET + 50;
        let mut first_cancelled = None;
        for n in 0..cancelled {
            let a = book(&store, &booking(&format!("b{n}"), slot(1, "08:00"), &[1]))
                .await
                .unwrap();
            store
                .cancel(&cancellation(&format!("c{n}"), &a.confirmation, 1), epoch())
                .await
                .unwrap();
            first_cancelled.get_or_insert(a);
        }
        let live = book(&store, &booking("live", slot(1, "08:15"), &[2]))
            .await
            .unwrap();
        let first = store
            .manifest(&ManifestQuery {
                day: day(1),
                after: None,
                limit: 10,
                include_cancelled: false,
            })
            .await
            .unwrap();
        assert_eq!(first.appointments, vec![live.clone()]);
        assert_eq!(first.next, None, "one call, no cancelled member to skip");
        // Within its retention a cancelled appointment still reads CANCELLED.
        let gone = first_cancelled.expect("one cancelled");
        let read = store
            .appointment(&gone.confirmation, &applicant(1).passport)
            .await
            .unwrap();
        assert_eq!(read.status, AppointmentStatus::Cancelled);
        // With cancelled ones: pages of 100 in (time, confirmation) order, every one once.
        let all = all_manifest(&store, &day(1), true).await;
        assert_eq!(all.len(), cancelled as usize + 1);
        let order: Vec<_> = all
            .iter()
            .map(|a| (a.slot.time, a.confirmation.clone()))
            .collect();
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(order, sorted);
        assert_eq!(
            all.iter()
                .filter(|a| a.status == AppointmentStatus::Cancelled)
                .count(),
            cancelled as usize
        );
        assert_audit_clean(&store, 0, 2).await;
    }

    pub async fn registering_a_receipt_is_idempotent_and_a_different_one_conflicts(store: Store) {
        let r = receipt(1);
        assert_eq!(store.register_receipt(&r).await.unwrap(), (r.clone(), true));
        assert_eq!(
            store.register_receipt(&r).await.unwrap(),
            (r.clone(), false)
        );
        let variants = [
            Receipt {
                passport: passport(2),
                ..r.clone()
            },
            Receipt {
                paid_at: r.paid_at + Duration::nanoseconds(1),
                ..r.clone()
            },
            Receipt {
                amount: Money {
                    minor: 136_900,
                    currency: Currency::Cny,
                },
                ..r.clone()
            },
        ];
        for v in variants {
            assert_eq!(
                refusal(store.register_receipt(&v).await),
                Error::ReceiptConflict {
                    receipt_number: r.number.to_string()
                }
            );
        }
        // The first registration stands: a booking with it works.
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
            .await
            .unwrap();
        book(&store, &booking("b1", slot(1, "08:00"), &[1]))
            .await
            .unwrap();
        assert_eq!(store.register_receipt(&r).await.unwrap(), (r, false));
    }

    pub async fn two_hundred_concurrent_bookings_on_24_seats_book_exactly_24(store: Store) {
        store
            .open_slots(&plan(1, 1, "08:00", "08:00", 24), epoch())
            .await
            .unwrap();
        let ids: Vec<u32> = (1..=200).collect();
        let registrations = ids.iter().map(|i| {
            let store = store.clone();
            let r = receipt(*i);
            async move { store.register_receipt(&r).await }
        });
        for r in futures::future::join_all(registrations).await {
            r.unwrap();
        }
        let tasks: Vec<_> = ids
            .iter()
            .map(|i| {
                let store = store.clone();
                let b = booking(&format!("storm-{i}"), slot(1, "08:00"), &[*i]);
                tokio::spawn(async move { book(&store, &b).await })
            })
            .collect();
        let mut ok = 0;
        let mut full = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Domain(Error::SlotFull { .. })) => full += 1,
                Err(other) => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!((ok, full), (24, 176));
        let s = slot_state(&store, &slot(1, "08:00")).await;
        assert_eq!((s.capacity, s.booked), (24, 24));
        assert_eq!(all_manifest(&store, &day(1), false).await.len(), 24);
        assert_audit_clean(&store, 1, 1).await;
    }
}

trait WithPassport {
    fn with_passport(self, a: &Appointment) -> Self;
}

impl WithPassport for Cancellation {
    /// The cancellation made by the appointment's primary applicant.
    fn with_passport(mut self, a: &Appointment) -> Self {
        self.passport = a.applicants[0].passport.clone();
        self
    }
}
