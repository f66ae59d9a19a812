//! Conformance cases of a waiting-room admission's counted steps: holds, reschedules,
//! cancellations and waitlist joins made under one admission check and count its steps in their
//! own atomic store call (`ADMISSION_STEP_LIMIT`), on every backend (the Cluster included: the
//! admission record shares the booking hash tag). Run by `backend_matrix!` in
//! `tests/conformance.rs`.

use chrono::Duration;

use slotd::domain::lifecycle::{HoldId, Reschedule};
use slotd::domain::room::TicketId;
use slotd::domain::waitlist::{EntryId, WaitlistJoin};
use slotd::store::ADMISSION_STEP_LIMIT;

use super::*;

async fn hold_under(
    store: &Store,
    admission: &TicketId,
    request_id: &str,
    ids: &[u32],
) -> Result<slotd::domain::lifecycle::Hold, StoreError> {
    store
        .hold(
            &booking(request_id, slot(1, "08:00"), ids).under_admission(Some(admission.clone())),
            &HoldId::generate(),
            epoch() + Duration::minutes(10),
            epoch(),
        )
        .await
}

fn move_under(admission: &TicketId, request_id: &str, a: &Appointment, to: SlotRef) -> Reschedule {
    Reschedule {
        request_id: RequestId::parse(request_id).unwrap(),
        confirmation: a.confirmation.clone(),
        passport: a.applicants[0].passport.clone(),
        new_slot: to,
        admission: Some(admission.clone()),
    }
}

fn join_under(admission: &TicketId, request_id: &str, ids: &[u32]) -> WaitlistJoin {
    WaitlistJoin::new(
        RequestId::parse(request_id).unwrap(),
        post(),
        category(),
        range(3, 3),
        Vec::new(),
        ids.iter().map(|i| applicant(*i)).collect(),
    )
    .unwrap()
    .under_admission(Some(admission.clone()))
}

/// Every kind of counted step counts once when it happens; past the limit each kind is refused
/// `AdmissionStepsExhausted` and changes nothing; a replay is no new step.
pub async fn every_counted_step_checks_and_counts_its_admission(store: Store) {
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 20), epoch())
        .await
        .unwrap();
    register(&store, 1..=12).await;
    let admission = TicketId::generate();
    let exhausted = Error::AdmissionStepsExhausted {
        limit: ADMISSION_STEP_LIMIT,
    };
    let now = epoch();

    // Step 1: a cancellation.
    let x = book(&store, &booking("adm-x", slot(1, "08:00"), &[1]))
        .await
        .unwrap();
    store
        .cancel(
            &cancellation("adm-cancel-x", &x.confirmation, 1)
                .under_admission(Some(admission.clone())),
            now,
        )
        .await
        .unwrap();
    // Step 2: a reschedule.
    let y = book(&store, &booking("adm-y", slot(1, "08:00"), &[2]))
        .await
        .unwrap();
    let moved = store
        .reschedule(
            &move_under(&admission, "adm-move-y", &y, slot(2, "08:00")),
            2,
            now,
        )
        .await
        .unwrap();
    assert_eq!(moved.slot, slot(2, "08:00"));
    // Step 3: a waitlist join.
    store
        .join_waitlist(
            &join_under(&admission, "adm-join", &[3]),
            &EntryId::generate(),
            2,
            now,
        )
        .await
        .unwrap();
    // Steps 4..=limit: holds; a replay of one is no new step.
    let first = hold_under(&store, &admission, "adm-hold-4", &[4])
        .await
        .unwrap();
    let again = hold_under(&store, &admission, "adm-hold-4", &[4])
        .await
        .unwrap();
    assert_eq!(again.id, first.id, "a replay answers the first hold");
    for (n, i) in (5..=ADMISSION_STEP_LIMIT).zip(5u32..) {
        hold_under(&store, &admission, &format!("adm-hold-{n}"), &[i])
            .await
            .unwrap_or_else(|e| panic!("step {n}: {e:?}"));
    }

    // Past the limit: every kind refused, nothing changed.
    let before = snapshot(&store).await;
    assert_eq!(
        refusal(hold_under(&store, &admission, "adm-hold-late", &[10]).await),
        exhausted
    );
    assert_eq!(
        refusal(
            store
                .reschedule(
                    &move_under(&admission, "adm-move-late", &moved, slot(3, "08:00")),
                    2,
                    now
                )
                .await
        ),
        exhausted
    );
    assert_eq!(
        refusal(
            store
                .cancel(
                    &cancellation("adm-cancel-late", &y.confirmation, 2)
                        .under_admission(Some(admission.clone())),
                    now,
                )
                .await
        ),
        exhausted
    );
    assert_eq!(
        refusal(
            store
                .join_waitlist(
                    &join_under(&admission, "adm-join-late", &[11]),
                    &EntryId::generate(),
                    2,
                    now
                )
                .await
        ),
        exhausted
    );
    assert_eq!(
        snapshot(&store).await,
        before,
        "a refused step changes nothing"
    );
    // Another admission has steps of its own.
    hold_under(&store, &TicketId::generate(), "adm-hold-other", &[10])
        .await
        .expect("another admission has its own steps");
    assert_audit_clean(&store, 1, 3).await;
}

/// A step refused by the store counts nothing, and after the admission's booking every step is
/// refused `AdmissionUsed`.
pub async fn a_refused_step_counts_nothing_and_a_booked_admission_makes_no_step(store: Store) {
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 20), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    let admission = TicketId::generate();
    for n in 0..ADMISSION_STEP_LIMIT + 2 {
        assert!(matches!(
            refusal(hold_under(&store, &admission, &format!("ref-hold-{n}"), &[9]).await),
            Error::ReceiptNotRegistered { .. }
        ));
    }
    hold_under(&store, &admission, "ref-hold-ok", &[1])
        .await
        .expect("the refused holds counted no step");
    let booked = book(
        &store,
        &booking("ref-book", slot(1, "08:00"), &[2]).under_admission(Some(admission.clone())),
    )
    .await
    .unwrap();
    let before = snapshot(&store).await;
    assert_eq!(
        refusal(hold_under(&store, &admission, "ref-hold-after", &[3]).await),
        Error::AdmissionUsed
    );
    assert_eq!(
        refusal(
            store
                .cancel(
                    &cancellation("ref-cancel-after", &booked.confirmation, 2)
                        .under_admission(Some(admission.clone())),
                    epoch(),
                )
                .await
        ),
        Error::AdmissionUsed
    );
    assert_eq!(snapshot(&store).await, before);
}
