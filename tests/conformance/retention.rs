//! #20 bounded data, past appointments: once an appointment's date has passed everywhere
//! (`appointment_retire_at`, 00:00 UTC two days after it) the sweeper step
//! (`retire_past_appointments`) frees its passports, keeps its receipts spent, takes it out of
//! its day's manifest and booked count, and forgets its record after the retention. Run on
//! every backend by `backend_matrix!` in `tests/conformance.rs`, with the injectable clock.

use chrono::{DateTime, Duration, Utc};

use slotd::domain::lifecycle::Reschedule;
use slotd::store::{appointment_retire_at, APPOINTMENT_RETIRE_BATCH, DEFAULT_RETENTION_DAYS};

use super::*;

const MS: Duration = Duration::milliseconds(1);

/// Receipt `number` paid for passport P{p} (a second receipt of the same applicant).
fn receipt_for(number: u32, p: u32) -> Receipt {
    Receipt {
        number: receipt_no(number),
        passport: passport(p),
        ..receipt(p)
    }
}

/// Booking for passport P{p} paying with receipt R{number}.
fn booking_with(request_id: &str, s: SlotRef, p: u32, number: u32) -> Booking {
    Booking::new(
        RequestId::parse(request_id).unwrap(),
        s,
        vec![Applicant {
            receipt: receipt_no(number),
            ..applicant(p)
        }],
    )
    .unwrap()
}

async fn book_at(
    store: &Store,
    b: &Booking,
    now: DateTime<Utc>,
) -> Result<Appointment, StoreError> {
    store.book(b, &ConfirmationNumber::generate(), now).await
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

/// Before, a passport whose interview date had passed could never book again (its claim named
/// the past appointment for ever) and the past day kept its manifest. Now the sweep, from 00:00
/// UTC two days after the date, frees the passports (not before), leaves the receipts spent
/// (the fee paid for that interview is used: a new receipt books), and the day's manifest and
/// booked count go to zero with the audit still clean.
pub async fn a_passport_whose_appointment_date_passed_books_again_after_the_sweep(store: Store) {
    store
        .open_slots(&plan(1, 6, "08:00", "08:15", 2), epoch())
        .await
        .unwrap();
    register(&store, [1, 2]).await;
    for (number, p) in [(101, 1), (102, 2)] {
        store
            .register_receipt(&receipt_for(number, p))
            .await
            .unwrap();
    }
    let first = book(&store, &booking("b1", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    book(&store, &booking("b2", slot(1, "08:15"), &[2]))
        .await
        .unwrap();
    let due = appointment_retire_at(day(1).date);
    assert_eq!(
        due,
        epoch() + Duration::days(3),
        "00:00 UTC two days after day 1"
    );

    // Not yet: the date has not passed everywhere.
    assert_eq!(store.retire_past_appointments(due - MS).await.unwrap(), 0);
    assert!(matches!(
        refusal(
            book_at(
                &store,
                &booking_with("early", slot(5, "08:00"), 1, 101),
                due - MS
            )
            .await
        ),
        Error::ApplicantAlreadyBooked { .. }
    ));
    assert_eq!(all_manifest(&store, &day(1), false).await.len(), 2);

    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 2);
    assert_eq!(
        store.retire_past_appointments(due).await.unwrap(),
        0,
        "once"
    );
    // The passport books again, with a new receipt ...
    let again = book_at(
        &store,
        &booking_with("again", slot(5, "08:00"), 1, 101),
        due,
    )
    .await
    .expect("the passport of a past appointment books again");
    assert_eq!(again.status, AppointmentStatus::Booked);
    // ... while the receipt that paid for the past interview stays spent.
    assert!(matches!(
        refusal(
            book_at(
                &store,
                &booking_with("old-fee", slot(5, "08:15"), 2, 2),
                due
            )
            .await
        ),
        Error::ReceiptInUse { .. }
    ));
    book_at(
        &store,
        &booking_with("new-fee", slot(5, "08:15"), 2, 102),
        due,
    )
    .await
    .expect("a new receipt books");
    // The past day is flat: no live member, nothing booked, audit clean.
    assert!(all_manifest(&store, &day(1), false).await.is_empty());
    for time in ["08:00", "08:15"] {
        assert_eq!(slot_state(&store, &slot(1, time)).await.booked, 0);
    }
    assert_audit_clean(&store, 1, 6).await;
    // The retired appointment still reads BOOKED (it took place, or was missed).
    let read = store
        .appointment(&first.confirmation, &passport(1))
        .await
        .unwrap();
    assert_eq!(read.status, AppointmentStatus::Booked);
}

/// A retired appointment reads until `retire_at + retention` by slotd's clock and NOT_FOUND
/// from then; it can no longer be cancelled or moved (its seats and passports were given back:
/// a cancel would free them twice), and those refusals change nothing.
pub async fn a_past_appointment_reads_until_its_retention_and_not_found_after(store: Store) {
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 2), epoch())
        .await
        .unwrap();
    register(&store, [1]).await;
    let a = book(&store, &booking("b1", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    let due = appointment_retire_at(day(1).date);
    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 1);

    let cancelled = store
        .cancel(&cancellation("c1", &a.confirmation, 1), due)
        .await;
    assert!(
        matches!(refusal(cancelled), Error::SlotStarted { ref slot } if *slot == a.slot),
        "a retired appointment is not cancelled"
    );
    let moved = store
        .reschedule(&move_to("m1", &a, slot(3, "08:00")), 2, due)
        .await;
    assert!(matches!(refusal(moved), Error::SlotStarted { .. }));
    assert_eq!(slot_state(&store, &slot(1, "08:00")).await.booked, 0);
    assert_eq!(slot_state(&store, &slot(3, "08:00")).await.booked, 0);
    assert_audit_clean(&store, 1, 3).await;

    let forget_at = due + Duration::days(DEFAULT_RETENTION_DAYS);
    store
        .retire_past_appointments(forget_at - MS)
        .await
        .unwrap();
    let read = store.appointment(&a.confirmation, &passport(1)).await;
    assert_eq!(
        read.unwrap().status,
        AppointmentStatus::Booked,
        "within the retention"
    );
    store.retire_past_appointments(forget_at).await.unwrap();
    assert!(matches!(
        refusal(store.appointment(&a.confirmation, &passport(1)).await),
        Error::AppointmentNotFound
    ));
}

/// Each sweep retires at most `APPOINTMENT_RETIRE_BATCH` appointments; an appointment moved
/// away from the past day before the sweep is not retired with that day (it keeps its passport
/// until its own date has passed); the last sweep leaves the day with no live member.
pub async fn past_appointments_retire_in_bounded_batches_and_a_moved_one_waits_for_its_date(
    store: Store,
) {
    let n = APPOINTMENT_RETIRE_BATCH + 6;
    store
        .open_slots(&plan(1, 4, "08:00", "08:15", n), epoch())
        .await
        .unwrap();
    register(&store, 1..=n + 1).await;
    for i in 1..=n {
        let time = if i % 2 == 0 { "08:00" } else { "08:15" };
        book(&store, &booking(&format!("b{i}"), slot(1, time), &[i]))
            .await
            .unwrap();
    }
    let mover = book(&store, &booking("mover", slot(1, "08:00"), &[n + 1]))
        .await
        .unwrap();
    store
        .reschedule(&move_to("away", &mover, slot(4, "08:00")), 2, epoch())
        .await
        .unwrap();

    let due = appointment_retire_at(day(1).date);
    assert_eq!(
        store.retire_past_appointments(due).await.unwrap(),
        APPOINTMENT_RETIRE_BATCH,
        "one bounded batch per call"
    );
    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 6);
    assert_eq!(store.retire_past_appointments(due).await.unwrap(), 0);
    assert!(all_manifest(&store, &day(1), false).await.is_empty());
    assert_audit_clean(&store, 1, 4).await;
    // The moved appointment is still live on day 4 and still holds its passport.
    store
        .register_receipt(&receipt_for(500, n + 1))
        .await
        .unwrap();
    assert!(matches!(
        refusal(
            book_at(
                &store,
                &booking_with("twice", slot(2, "08:00"), n + 1, 500),
                due
            )
            .await
        ),
        Error::ApplicantAlreadyBooked { .. }
    ));
    let day_four: Vec<_> = all_manifest(&store, &day(4), false)
        .await
        .into_iter()
        .map(|a| a.confirmation)
        .collect();
    assert_eq!(day_four, vec![mover.confirmation.clone()]);
    // Its own date passes: it retires then, and its passport books again (new receipt).
    let later = appointment_retire_at(day(4).date);
    assert_eq!(store.retire_past_appointments(later).await.unwrap(), 1);
    book_at(
        &store,
        &booking_with("free", slot(2, "08:15"), n + 1, 500),
        later,
    )
    .await
    .expect("the mover's passport is free after its own date");
}
