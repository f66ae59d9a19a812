//! Conformance cases of passport and receipt claims (issue #20, item 1): a claim is taken or
//! freed only while it still names the hold or appointment doing so, so no clock difference
//! between replicas (slotd passes its own `now`) lets one passport or receipt back two live
//! appointments. Run on every backend by `backend_matrix!` in `tests/conformance.rs`.

use chrono::Duration;

use slotd::domain::lifecycle::{HoldConfirmation, HoldId};

use super::*;

/// A hold of `ids` on `s` made at `epoch()`, expiring ten minutes later.
async fn hold_at_epoch(store: &Store, s: SlotRef, ids: &[u32]) -> slotd::domain::lifecycle::Hold {
    store
        .hold(
            &booking("claims-hold", s, ids),
            &HoldId::generate(),
            epoch() + Duration::minutes(10),
            epoch(),
        )
        .await
        .unwrap()
}

fn confirming(id: &HoldId) -> HoldConfirmation {
    HoldConfirmation {
        request_id: RequestId::parse("claims-confirm").unwrap(),
        hold: id.clone(),
        admission: None,
    }
}

/// Every BOOKED appointment of days 1..=2 that `p` is an applicant of.
async fn booked_for(store: &Store, p: u32) -> Vec<Appointment> {
    let mut out = Vec::new();
    for d in 1..=2 {
        for a in all_manifest(store, &day(d), false).await {
            if a.status == AppointmentStatus::Booked && a.includes(&passport(p)) {
                out.push(a);
            }
        }
    }
    out
}

/// The interleaving at the boundary, with the clock each replica would pass: a hold on
/// day 1 expires at E; a replica whose clock reads E books the same passport and receipt on day
/// 2 (to it the hold's claims have lapsed); then a replica whose clock reads E - 1 ms confirms
/// the hold. Before compare-and-set both succeeded: two BOOKED appointments on one passport.
pub async fn a_hold_whose_claims_a_later_clock_took_is_never_confirmed(store: Store) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:00", 5), epoch())
        .await
        .unwrap();
    register(&store, [1]).await;
    let h = hold_at_epoch(&store, slot(1, "08:00"), &[1]).await;
    let expiry = h.expires_at;

    let other = store
        .book(
            &booking("claims-book", slot(2, "08:00"), &[1]),
            &ConfirmationNumber::generate(),
            expiry,
        )
        .await
        .unwrap();

    let late = expiry - Duration::milliseconds(1);
    let refused = refusal(
        store
            .confirm_hold(&confirming(&h.id), &ConfirmationNumber::generate(), late)
            .await,
    );
    assert!(matches!(refused, Error::HoldExpired { .. }), "{refused:?}");
    let booked = booked_for(&store, 1).await;
    assert_eq!(
        booked.iter().map(|a| &a.confirmation).collect::<Vec<_>>(),
        vec![&other.confirmation],
        "one passport backs one live appointment"
    );
    // The claims stay the booking's: the same passport and receipt are refused elsewhere, at
    // either clock.
    for now in [late, expiry + Duration::minutes(1)] {
        let refused = refusal(
            store
                .book(
                    &booking("claims-third", slot(1, "08:00"), &[1]),
                    &ConfirmationNumber::generate(),
                    now,
                )
                .await,
        );
        assert!(
            matches!(
                refused,
                Error::ReceiptInUse { .. } | Error::ApplicantAlreadyBooked { .. }
            ),
            "{refused:?}"
        );
    }
    // The lost hold's seat comes back at its expiry, once.
    store
        .reclaim_expired_holds(expiry + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(slot_state(&store, &slot(1, "08:00")).await.held, 0);
    assert_audit_clean(&store, 1, 2).await;
}

/// The other order at the same boundary: a confirm at E - 1 ms turns the claims into the
/// appointment's, so a booking at E (its clock says the hold lapsed) finds them taken.
pub async fn a_hold_confirmed_just_before_its_expiry_keeps_its_claims_against_a_later_clock(
    store: Store,
) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:00", 5), epoch())
        .await
        .unwrap();
    register(&store, [1]).await;
    let h = hold_at_epoch(&store, slot(1, "08:00"), &[1]).await;
    let expiry = h.expires_at;
    let confirmed = store
        .confirm_hold(
            &confirming(&h.id),
            &ConfirmationNumber::generate(),
            expiry - Duration::milliseconds(1),
        )
        .await
        .unwrap();
    let refused = refusal(
        store
            .book(
                &booking("claims-book", slot(2, "08:00"), &[1]),
                &ConfirmationNumber::generate(),
                expiry,
            )
            .await,
    );
    assert!(
        matches!(
            refused,
            Error::ReceiptInUse { .. } | Error::ApplicantAlreadyBooked { .. }
        ),
        "{refused:?}"
    );
    assert_eq!(
        booked_for(&store, 1)
            .await
            .iter()
            .map(|a| &a.confirmation)
            .collect::<Vec<_>>(),
        vec![&confirmed.confirmation]
    );
    assert_audit_clean(&store, 1, 2).await;
}

/// A claim taken and freed again in between (the other booking was cancelled) does not name the
/// hold either: the hold stays expired and books nothing.
pub async fn a_hold_whose_claims_were_taken_and_freed_again_stays_expired(store: Store) {
    store
        .open_slots(&plan(1, 2, "08:00", "08:00", 5), epoch())
        .await
        .unwrap();
    register(&store, [1]).await;
    let h = hold_at_epoch(&store, slot(1, "08:00"), &[1]).await;
    let expiry = h.expires_at;
    let other = store
        .book(
            &booking("claims-book", slot(2, "08:00"), &[1]),
            &ConfirmationNumber::generate(),
            expiry,
        )
        .await
        .unwrap();
    store
        .cancel(
            &cancellation("claims-cancel", &other.confirmation, 1),
            expiry,
        )
        .await
        .unwrap();
    let refused = refusal(
        store
            .confirm_hold(
                &confirming(&h.id),
                &ConfirmationNumber::generate(),
                expiry - Duration::milliseconds(1),
            )
            .await,
    );
    assert!(matches!(refused, Error::HoldExpired { .. }), "{refused:?}");
    assert!(booked_for(&store, 1).await.is_empty());
    assert_audit_clean(&store, 1, 2).await;
}

/// Hold ids are bearer credentials (issue #20, item 6): no event of the log every WatchEvents
/// consumer reads carries one, for plain holds (held, booked, hold_released, hold_expired) and
/// waitlist offers (offered, offer_declined, offer_expired) alike. Events name a hold by
/// `hold_ref`, 16 hex digits of SHA-1("hold:<id>"), the same on every backend.
pub async fn no_event_carries_a_hold_id_only_its_reference(store: Store) {
    use slotd::domain::lifecycle::{EventStart, HoldRelease};
    store
        .open_slots(&plan(1, 1, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    store
        .open_slots(&plan(2, 2, "08:00", "08:00", 3), epoch())
        .await
        .unwrap();
    register(&store, 1..=6).await;
    let hold_of = |request_id: &'static str, ids: &'static [u32]| {
        let store = store.clone();
        async move {
            store
                .hold(
                    &booking(request_id, slot(2, "08:00"), ids),
                    &HoldId::generate(),
                    epoch() + Duration::minutes(10),
                    epoch(),
                )
                .await
                .unwrap()
        }
    };
    let confirmed = hold_of("cred-h1", &[1]).await;
    store
        .confirm_hold(
            &confirming(&confirmed.id),
            &ConfirmationNumber::generate(),
            epoch(),
        )
        .await
        .unwrap();
    let released = hold_of("cred-h2", &[2]).await;
    store
        .release_hold(
            &HoldRelease {
                request_id: RequestId::parse("cred-release").unwrap(),
                hold: released.id.clone(),
            },
            epoch(),
        )
        .await
        .unwrap();
    let expired = hold_of("cred-h3", &[3]).await;
    // A waitlist offer, declined, then offered again and left to expire.
    let a = book(&store, &booking("cred-a", slot(1, "08:00"), &[4]))
        .await
        .unwrap();
    let w = super::waitlist::join(&store, "cred-w", 1, 1, &[5]).await;
    store
        .cancel(&cancellation("cred-c", &a.confirmation, 4), epoch())
        .await
        .unwrap();
    let offer = super::waitlist::offer_of(&store, &w).await;
    store
        .reclaim_expired_holds(epoch() + Duration::days(1))
        .await
        .unwrap();

    let events = store
        .events(EventStart::After(Default::default()), 1000)
        .await
        .unwrap()
        .events;
    let ids = [&confirmed.id, &released.id, &expired.id, &offer.id];
    for e in &events {
        assert!(!e.fields.contains_key("hold"), "{e:?}");
        for value in e.fields.values() {
            for id in ids {
                assert!(
                    !value.contains(id.as_str()),
                    "event {} carries hold id {id}: {e:?}",
                    e.kind
                );
            }
        }
    }
    let refs: Vec<(&str, &str)> = events
        .iter()
        .filter_map(|e| Some((e.kind.as_str(), e.field("hold_ref")?)))
        .collect();
    let has = |kind: &str, id: &HoldId| refs.contains(&(kind, id.reference().as_str()));
    assert!(has("held", &confirmed.id), "{refs:?}");
    assert!(has("booked", &confirmed.id), "{refs:?}");
    assert!(has("hold_released", &released.id), "{refs:?}");
    assert!(has("hold_expired", &expired.id), "{refs:?}");
    assert!(has("offered", &offer.id), "{refs:?}");
    assert!(has("offer_expired", &offer.id), "{refs:?}");
    assert_eq!(confirmed.id.reference().len(), HoldId::REFERENCE_LEN);
}

/// No oracles (issue #20, item 5): joining the waitlist with a passport that waits already but
/// a receipt that is not its own answers the receipt refusal, never ALREADY_WAITING; only a
/// caller who shows the passport's receipt learns that it waits. A moving join with the number
/// of a cancelled appointment but another group answers APPOINTMENT_NOT_FOUND, like a number
/// that does not exist, never APPOINTMENT_CANCELLED.
pub async fn joining_tells_a_passport_waits_only_to_whoever_shows_its_receipt(store: Store) {
    use slotd::domain::waitlist::{EntryId, WaitlistJoin};
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=3).await;
    super::waitlist::join(&store, "oracle-w", 1, 1, &[1]).await;
    let join_as = |request_id: &str, a: Applicant| {
        WaitlistJoin::new(
            RequestId::parse(request_id).unwrap(),
            post(),
            category(),
            range(1, 2),
            Vec::new(),
            vec![a],
        )
        .unwrap()
    };
    let unknown = Applicant {
        receipt: receipt_no(9),
        ..applicant(1)
    };
    let others = Applicant {
        receipt: receipt_no(2),
        ..applicant(1)
    };
    let before = snapshot(&store).await;
    for (request_id, a) in [("oracle-1", unknown), ("oracle-2", others)] {
        let refused = refusal(
            store
                .join_waitlist(&join_as(request_id, a), &EntryId::generate(), 2, epoch())
                .await,
        );
        assert!(
            matches!(
                refused,
                Error::ReceiptNotRegistered { .. } | Error::ReceiptPassportMismatch { .. }
            ),
            "{request_id}: {refused:?}"
        );
    }
    // Its own receipt proves the passport: now it may learn that it waits.
    let refused = refusal(
        store
            .join_waitlist(
                &join_as("oracle-3", applicant(1)),
                &EntryId::generate(),
                2,
                epoch(),
            )
            .await,
    );
    assert!(
        matches!(refused, Error::AlreadyWaiting { .. }),
        "{refused:?}"
    );
    assert_eq!(snapshot(&store).await, before);

    // A cancelled appointment's number with another group looks like no appointment.
    let a = book(&store, &booking("oracle-b", slot(3, "08:00"), &[2]))
        .await
        .unwrap();
    store
        .cancel(&cancellation("oracle-c", &a.confirmation, 2), epoch())
        .await
        .unwrap();
    let refused = refusal(
        store
            .join_waitlist(
                &join_as("oracle-4", applicant(3)).moving(a.confirmation.clone()),
                &EntryId::generate(),
                2,
                epoch(),
            )
            .await,
    );
    assert!(matches!(refused, Error::AppointmentNotFound), "{refused:?}");
}

fn moved_to(
    request_id: &str,
    a: &Appointment,
    to: SlotRef,
) -> slotd::domain::lifecycle::Reschedule {
    slotd::domain::lifecycle::Reschedule {
        request_id: RequestId::parse(request_id).unwrap(),
        confirmation: a.confirmation.clone(),
        passport: a.applicants[0].passport.clone(),
        new_slot: to,
        admission: None,
    }
}

/// Offers (issue #20, item 8): an offer to a moving entry that is refused on acceptance
/// (RESCHEDULE_LIMIT: the group moved elsewhere meanwhile and has no reschedule left) gives its
/// seats back at once, to the next entry in line, and ends its entry with the reason; it does
/// not sit on the seats for the offer's whole TTL.
pub async fn a_refused_moving_offer_frees_its_seats_at_once_and_ends_its_entry(store: Store) {
    use slotd::domain::waitlist::EntryStatus;
    store
        .open_slots(&plan(1, 3, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=4).await;
    let mine = book(&store, &booking("mine", slot(3, "08:00"), &[1]))
        .await
        .unwrap();
    let early = book(&store, &booking("early", slot(1, "08:00"), &[2]))
        .await
        .unwrap();
    let moving = super::waitlist::join_moving(&store, "w-moving", &mine, 1, 1, 2)
        .await
        .unwrap();
    let next = super::waitlist::join(&store, "w-next", 1, 1, &[4]).await;
    store
        .cancel(&cancellation("c-early", &early.confirmation, 2), epoch())
        .await
        .unwrap();
    let offer = super::waitlist::offer_of(&store, &moving).await;
    // Meanwhile the group spends both its reschedules elsewhere (day 3 -> 2 -> 3).
    let later = epoch() + Duration::minutes(1);
    store
        .reschedule(&moved_to("m-1", &mine, slot(2, "08:00")), 2, later)
        .await
        .unwrap();
    store
        .reschedule(&moved_to("m-2", &mine, slot(3, "08:00")), 2, later)
        .await
        .unwrap();
    let refused = refusal(
        store
            .confirm_hold(
                &HoldConfirmation {
                    request_id: RequestId::parse("accept").unwrap(),
                    hold: offer.id.clone(),
                    admission: None,
                },
                &ConfirmationNumber::generate(),
                later,
            )
            .await,
    );
    assert!(
        matches!(refused, Error::RescheduleLimit { .. }),
        "{refused:?}"
    );
    let gone = super::waitlist::entry(&store, &moving).await;
    assert_eq!(gone.status, EntryStatus::Cancelled);
    assert_eq!(gone.reason.as_deref(), Some("RESCHEDULE_LIMIT"));
    // The seat went on to the next entry at once, long before the offer's TTL.
    assert_eq!(
        super::waitlist::offer_of(&store, &next).await.slot,
        slot(1, "08:00")
    );
    let day1 = slot_state(&store, &slot(1, "08:00")).await;
    assert_eq!((day1.booked, day1.held), (0, 1));
    assert_eq!(
        store
            .appointment(&mine.confirmation, &passport(1))
            .await
            .unwrap()
            .slot,
        slot(3, "08:00")
    );
    assert_audit_clean(&store, 1, 3).await;
}

/// Cancelling an appointment ends the waitlist entry that waited to move it, at once: while it
/// waits (no seats involved) and while it has an offer (whose seats come back and go to the
/// next entry).
pub async fn cancelling_an_appointment_ends_the_entry_that_wanted_to_move_it(store: Store) {
    use slotd::domain::waitlist::EntryStatus;
    store
        .open_slots(&plan(1, 6, "08:00", "08:00", 1), epoch())
        .await
        .unwrap();
    register(&store, 1..=6).await;
    // Waiting: appointment on day 6, waiting for day 4 or 5.
    let far = book(&store, &booking("far", slot(6, "08:00"), &[5]))
        .await
        .unwrap();
    let waiting = super::waitlist::join_moving(&store, "w-far", &far, 4, 5, 2)
        .await
        .unwrap();
    store
        .cancel(&cancellation("c-far", &far.confirmation, 5), epoch())
        .await
        .unwrap();
    let gone = super::waitlist::entry(&store, &waiting).await;
    assert_eq!(gone.status, EntryStatus::Cancelled);
    assert_eq!(gone.reason.as_deref(), Some("APPOINTMENT_CANCELLED"));

    // Offered: appointment on day 3, its entry holds the seat released on day 1.
    let mine = book(&store, &booking("mine", slot(3, "08:00"), &[1]))
        .await
        .unwrap();
    let early = book(&store, &booking("early", slot(1, "08:00"), &[2]))
        .await
        .unwrap();
    let moving = super::waitlist::join_moving(&store, "w-moving", &mine, 1, 1, 2)
        .await
        .unwrap();
    let next = super::waitlist::join(&store, "w-next", 1, 1, &[4]).await;
    store
        .cancel(&cancellation("c-early", &early.confirmation, 2), epoch())
        .await
        .unwrap();
    let offer = super::waitlist::offer_of(&store, &moving).await;
    store
        .cancel(&cancellation("c-mine", &mine.confirmation, 1), epoch())
        .await
        .unwrap();
    let gone = super::waitlist::entry(&store, &moving).await;
    assert_eq!(gone.status, EntryStatus::Cancelled);
    assert_eq!(gone.reason.as_deref(), Some("APPOINTMENT_CANCELLED"));
    let released = store.find_hold(&offer.id).await.unwrap().unwrap();
    assert_eq!(
        released.status,
        slotd::domain::lifecycle::HoldStatus::Released
    );
    assert_eq!(
        super::waitlist::offer_of(&store, &next).await.slot,
        slot(1, "08:00")
    );
    assert_audit_clean(&store, 1, 6).await;
}
