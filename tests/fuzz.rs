//! Fuzzing with a proptest harness (cargo-fuzz needs a nightly toolchain, which CI does not
//! have): a short, fixed run on every `cargo test`.
//!
//! Targets:
//! - request decoding and validation: bytes decoded as each request message (prost), then run
//!   through the convert layer that every handler uses. It must never panic, and must answer
//!   either a valid command or INVALID_ARGUMENT whose every violation names a field of that
//!   message. Inputs: the corpus (tests/corpus/decode, replayed first), random bytes, mutated
//!   corpus entries, and structured messages full of hostile strings.
//! - credentials and ids: admission tokens, ticket and waitlist entry secrets, operator tokens,
//!   hold ids,
//!   confirmation numbers, request ids, ticket ids, client keys, event ids, passports and
//!   receipts. Parsing never panics and is idempotent; a forged or mutated token or secret never
//!   verifies. The corpus tests/corpus/tokens is replayed first.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};

use slotd::api::auth::OperatorAuth;
use slotd::api::convert;
use slotd::api::pb;
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::lifecycle::{EventId, HoldId};
use slotd::domain::room::{ClientKey, TicketId};
use slotd::domain::types::{ConfirmationNumber, PassportNumber, ReceiptNumber, RequestId};
use slotd::domain::waitlist::EntryId;
use slotd::domain::Error;

const KEY: &str = "fuzz-admission-key-0123456789abcdef";
const OTHER_KEY: &str = "fuzz-other-admission-key-0123456789";
const OPERATOR_TOKEN: &str = "fuzz-operator-token-0123456789";

fn corpus(dir: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(dir);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", root.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", root.display());
    files
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Request decoding and validation

/// The convert layer's answer: Ok, or every violation must name one of `fields` (or a path
/// below one). Any other error, an empty violation list or a blank field is a finding.
fn judge<T>(what: &str, result: Result<T, Error>, fields: &[&str]) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(Error::Invalid { violations }) => {
            if violations.is_empty() {
                return Err(format!("{what}: INVALID_ARGUMENT without a violation"));
            }
            for v in &violations {
                let named = fields.iter().any(|f| {
                    v.field == *f
                        || v.field.starts_with(&format!("{f}."))
                        || v.field.starts_with(&format!("{f}["))
                });
                if !named || v.description.is_empty() {
                    return Err(format!(
                        "{what}: violation {v:?} does not name a field of {fields:?}"
                    ));
                }
            }
            Ok(())
        }
        Err(other) => Err(format!("{what}: not a validation answer: {other:?}")),
    }
}

/// Decodes `bytes` as `M` (a decode error is the transport's INVALID_ARGUMENT: fine) and
/// validates what decoded. Ok(true) when it decoded.
fn target<M: Message + Default, T>(
    bytes: &[u8],
    what: &str,
    fields: &[&str],
    convert: impl Fn(&M) -> Result<T, Error>,
) -> Result<bool, String> {
    match M::decode(bytes) {
        Err(_) => Ok(false),
        Ok(message) => judge(what, convert(&message), fields).map(|()| true),
    }
}

/// Every request message the services accept, by name.
fn decode_and_validate(name: &str, bytes: &[u8]) -> Result<bool, String> {
    match name {
        "BookAppointmentRequest" => target::<pb::BookAppointmentRequest, _>(
            bytes,
            name,
            &["request_id", "slot", "applicants"],
            convert::booking,
        ),
        "HoldSlotRequest" => target::<pb::HoldSlotRequest, _>(
            bytes,
            name,
            &["request_id", "slot", "applicants"],
            convert::hold_request,
        ),
        "ConfirmHoldRequest" => target::<pb::ConfirmHoldRequest, _>(
            bytes,
            name,
            &["hold_id", "request_id"],
            convert::hold_confirmation,
        ),
        "ReleaseHoldRequest" => target::<pb::ReleaseHoldRequest, _>(
            bytes,
            name,
            &["hold_id", "request_id"],
            convert::hold_release,
        ),
        "CancelAppointmentRequest" => target::<pb::CancelAppointmentRequest, _>(
            bytes,
            name,
            &["confirmation_number", "passport_number", "request_id"],
            convert::cancellation,
        ),
        "GetAppointmentRequest" => target::<pb::GetAppointmentRequest, _>(
            bytes,
            name,
            &["confirmation_number", "passport_number"],
            convert::lookup,
        ),
        "RenderConfirmationRequest" => target::<pb::RenderConfirmationRequest, _>(
            bytes,
            name,
            &["confirmation_number", "passport_number"],
            convert::render_lookup,
        ),
        "RescheduleAppointmentRequest" => target::<pb::RescheduleAppointmentRequest, _>(
            bytes,
            name,
            &[
                "confirmation_number",
                "passport_number",
                "request_id",
                "new_slot",
            ],
            convert::reschedule,
        ),
        "OpenSlotsRequest" => target::<pb::OpenSlotsRequest, _>(
            bytes,
            name,
            &[
                "post_id",
                "category",
                "from_date",
                "to_date",
                "weekdays",
                "first_time",
                "last_time",
                "seats_per_slot",
            ],
            convert::open_plan,
        ),
        "SetSlotCapacityRequest" => target::<pb::SetSlotCapacityRequest, _>(
            bytes,
            name,
            &["slot", "capacity"],
            convert::capacity_change,
        ),
        "CloseSlotsRequest" => target::<pb::CloseSlotsRequest, _>(
            bytes,
            name,
            &["post_id", "category", "date", "time"],
            convert::closing,
        ),
        "ListAppointmentsRequest" => target::<pb::ListAppointmentsRequest, _>(
            bytes,
            name,
            &["post_id", "category", "date", "page_size", "page_token"],
            convert::manifest_query,
        ),
        "RegisterReceiptRequest" => target::<pb::RegisterReceiptRequest, _>(
            bytes,
            name,
            &[
                "receipt_number",
                "passport_number",
                "paid_at",
                "amount",
                "currency",
            ],
            convert::receipt,
        ),
        "AuditInventoryRequest" => target::<pb::AuditInventoryRequest, _>(
            bytes,
            name,
            &["post_id", "category", "from_date", "to_date"],
            convert::audit_query,
        ),
        "ListAvailableDatesRequest" => target::<pb::ListAvailableDatesRequest, _>(
            bytes,
            name,
            &["post_id", "category", "from_date", "to_date"],
            convert::dates_query,
        ),
        "ListSlotsRequest" => target::<pb::ListSlotsRequest, _>(
            bytes,
            name,
            &["post_id", "category", "date"],
            convert::slots_query,
        ),
        "GetSlotRequest" => {
            target::<pb::GetSlotRequest, _>(bytes, name, &["slot"], convert::slot_query)
        }
        "WatchEventsRequest" => {
            target::<pb::WatchEventsRequest, _>(bytes, name, &["after_id"], convert::event_start)
        }
        "ConfigureWaitingRoomRequest" => target::<pb::ConfigureWaitingRoomRequest, _>(
            bytes,
            name,
            &["config"],
            |m: &pb::ConfigureWaitingRoomRequest| convert::room_config(m.config.as_ref()),
        ),
        "JoinRequest" => target::<pb::JoinRequest, _>(bytes, name, &["client_key"], |m| {
            ClientKey::parse(&m.client_key)
                .map_err(|v| Error::Invalid {
                    violations: vec![v.within("client_key")],
                })
                .map(|_| ())
        }),
        "GetStatusRequest" => target::<pb::GetStatusRequest, _>(bytes, name, &["ticket_id"], |m| {
            TicketId::parse(&m.ticket_id)
                .map_err(|v| Error::Invalid {
                    violations: vec![v.within("ticket_id")],
                })
                .map(|_| ())
        }),
        "JoinWaitlistRequest" => target::<pb::JoinWaitlistRequest, _>(
            bytes,
            name,
            &[
                "request_id",
                "post_id",
                "category",
                "from_date",
                "to_date",
                "times",
                "applicants",
                "confirmation_number",
                "passport_number",
            ],
            convert::waitlist_join,
        ),
        "GetWaitlistEntryRequest" => target::<pb::GetWaitlistEntryRequest, _>(
            bytes,
            name,
            &["entry_id", "entry_secret"],
            |m| convert::entry_credentials(&m.entry_id, &m.entry_secret),
        ),
        "LeaveWaitlistRequest" => {
            target::<pb::LeaveWaitlistRequest, _>(bytes, name, &["entry_id", "entry_secret"], |m| {
                convert::entry_credentials(&m.entry_id, &m.entry_secret)
            })
        }
        "SetWaitlistShareRequest" => target::<pb::SetWaitlistShareRequest, _>(
            bytes,
            name,
            &["post_id", "category", "percent"],
            convert::waitlist_share,
        ),
        other => Err(format!("no decode target named {other}")),
    }
}

const MESSAGES: &[&str] = &[
    "BookAppointmentRequest",
    "HoldSlotRequest",
    "ConfirmHoldRequest",
    "ReleaseHoldRequest",
    "CancelAppointmentRequest",
    "GetAppointmentRequest",
    "RenderConfirmationRequest",
    "RescheduleAppointmentRequest",
    "OpenSlotsRequest",
    "SetSlotCapacityRequest",
    "CloseSlotsRequest",
    "ListAppointmentsRequest",
    "RegisterReceiptRequest",
    "AuditInventoryRequest",
    "ListAvailableDatesRequest",
    "ListSlotsRequest",
    "GetSlotRequest",
    "WatchEventsRequest",
    "ConfigureWaitingRoomRequest",
    "JoinRequest",
    "GetStatusRequest",
    "JoinWaitlistRequest",
    "GetWaitlistEntryRequest",
    "LeaveWaitlistRequest",
    "SetWaitlistShareRequest",
];

/// Every corpus entry under every message (it names the one it was written for; the others
/// see foreign bytes, which is fuzzing too).
fn all_targets(bytes: &[u8]) -> Result<(), String> {
    for name in MESSAGES {
        decode_and_validate(name, bytes)?;
    }
    Ok(())
}

#[test]
fn the_decode_corpus_replays_cleanly() {
    let files = corpus("decode");
    for (path, bytes) in &files {
        let file = path
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let message = file.split('-').next().unwrap_or_default();
        assert!(
            message == "any" || MESSAGES.contains(&message),
            "{file}: corpus files are named <Message>-<n>.bin or any-<what>.bin"
        );
        if let Err(e) = all_targets(bytes) {
            panic!("{file}: {e}");
        }
    }
    // The seeds decode as the message they were written for: a corpus of undecodable noise
    // would fuzz nothing past the decoder.
    for (path, bytes) in &files {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let message = file.split('-').next().unwrap_or("");
        if message != "any" {
            assert_eq!(
                decode_and_validate(message, bytes),
                Ok(true),
                "{file} does not decode as {message}"
            );
        }
    }
}

#[test]
fn random_and_mutated_bytes_never_panic_and_name_fields() {
    let seeds: Vec<Vec<u8>> = corpus("decode").into_iter().map(|(_, b)| b).collect();
    let random = proptest::collection::vec(any::<u8>(), 0..300).boxed();
    let mutated = (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(i, edits, cut)| {
            let mut bytes = seeds[i].clone();
            for (at, byte) in edits {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            // Sometimes truncated too.
            if bytes.len() > 4 && cut.index(4) == 0 {
                let keep = cut.index(bytes.len());
                bytes.truncate(keep);
            }
            bytes
        })
        .boxed();
    let inputs = prop_oneof![random, mutated];
    let result = runner(3_000).run(&inputs, |bytes| {
        all_targets(&bytes).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Strings that hit the validators' edges: valid values, near misses, control characters,
/// mixed scripts, huge and empty ones, and arbitrary characters.
fn hostile_text() -> impl Strategy<Value = String> {
    let samples = [
        "",
        " ",
        "BEIJING",
        "ALL_OTHERS",
        "beijing",
        "2030-01-14",
        "2025-02-30",
        "2030-02-29",
        "2030-13-01",
        "0000-00-00",
        "08:15",
        "24:00",
        "23:60",
        "08:10",
        "8:15",
        "-08:15",
        "P0000001",
        "p0000001",
        "R0000001",
        "AA00000001",
        "Wei",
        "Zhang",
        "Wеi",
        "伟",
        "O'Neil",
        "Anne-Marie",
        "a\u{0}b",
        "\u{7}",
        "\u{202e}evil",
        "ABCDEFGHJKMNPQ",
        "0OIL1U",
        "0123456789abcdef0123456789abcdef",
        "185.00",
        "-1",
        "1e9",
        "NaN",
        "USD",
        "CNY",
        "2030-01-06T00:00:00Z",
        "2030-01-06T00:00:00+25:00",
        "1-0",
        "$",
    ];
    prop_oneof![
        4 => prop::sample::select(samples.to_vec()).prop_map(str::to_owned),
        2 => proptest::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => (prop::sample::select(vec!['A', 'é', '\u{0}', '伟', '9']), 100..12_000usize)
            .prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

fn slot_strategy() -> impl Strategy<Value = Option<pb::SlotRef>> {
    prop::option::weighted(
        0.9,
        (
            hostile_text(),
            hostile_text(),
            hostile_text(),
            hostile_text(),
        )
            .prop_map(|(post_id, category, date, time)| pb::SlotRef {
                post_id,
                category,
                date,
                time,
            }),
    )
}

fn applicant_strategy() -> impl Strategy<Value = pb::Applicant> {
    (
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
    )
        .prop_map(
            |(passport_number, given_name, surname, ds160_confirmation, receipt_number)| {
                pb::Applicant {
                    passport_number,
                    given_name,
                    surname,
                    ds160_confirmation,
                    receipt_number,
                }
            },
        )
}

#[test]
fn structured_hostile_messages_are_valid_or_name_their_fields() {
    let book = || {
        (
            hostile_text(),
            slot_strategy(),
            proptest::collection::vec(applicant_strategy(), 0..12),
        )
            .prop_map(|(request_id, slot, applicants)| {
                pb::BookAppointmentRequest {
                    request_id,
                    slot,
                    applicants,
                }
                .encode_to_vec()
            })
    };
    let reschedule = (
        hostile_text(),
        hostile_text(),
        hostile_text(),
        slot_strategy(),
    )
        .prop_map(
            |(confirmation_number, passport_number, request_id, new_slot)| {
                pb::RescheduleAppointmentRequest {
                    confirmation_number,
                    passport_number,
                    request_id,
                    new_slot,
                }
                .encode_to_vec()
            },
        );
    let open = (
        (
            hostile_text(),
            hostile_text(),
            hostile_text(),
            hostile_text(),
        ),
        proptest::collection::vec(any::<i32>(), 0..9),
        (hostile_text(), hostile_text(), any::<u32>()),
    )
        .prop_map(
            |((post_id, category, from, to), weekdays, (first_time, last_time, seats))| {
                pb::OpenSlotsRequest {
                    post_id,
                    category,
                    from_date: from,
                    to_date: to,
                    weekdays,
                    first_time,
                    last_time,
                    seats_per_slot: seats,
                }
                .encode_to_vec()
            },
        );
    let receipt = (
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
        hostile_text(),
    )
        .prop_map(
            |(receipt_number, passport_number, paid_at, amount, currency)| {
                pb::RegisterReceiptRequest {
                    receipt_number,
                    passport_number,
                    paid_at,
                    amount,
                    currency,
                }
                .encode_to_vec()
            },
        );
    let capacity = (slot_strategy(), any::<u32>())
        .prop_map(|(slot, capacity)| pb::SetSlotCapacityRequest { slot, capacity }.encode_to_vec());
    let manifest = (hostile_text(), hostile_text(), any::<u32>(), any::<bool>()).prop_map(
        |(date, page_token, page_size, include_cancelled)| {
            pb::ListAppointmentsRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date,
                page_size,
                page_token,
                include_cancelled,
            }
            .encode_to_vec()
        },
    );
    let cases: Vec<(&str, BoxedStrategy<Vec<u8>>)> = vec![
        ("BookAppointmentRequest", book().boxed()),
        ("HoldSlotRequest", book().boxed()),
        ("RescheduleAppointmentRequest", reschedule.boxed()),
        ("OpenSlotsRequest", open.boxed()),
        ("RegisterReceiptRequest", receipt.boxed()),
        ("SetSlotCapacityRequest", capacity.boxed()),
        ("ListAppointmentsRequest", manifest.boxed()),
    ];
    for (name, strategy) in cases {
        let result = runner(300).run(&strategy, |bytes| {
            decode_and_validate(name, &bytes)
                .map(|_| ())
                .map_err(TestCaseError::fail)
        });
        if let Err(e) = result {
            panic!("{name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials and ids

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-07T00:00:00Z")
        .expect("instant")
        .with_timezone(&Utc)
}

/// Parsing an id never panics, and what parses re-parses to itself (one canonical form).
fn ids_behave(text: &str) -> Result<(), String> {
    fn idempotent<T: PartialEq + std::fmt::Debug, E>(
        what: &str,
        text: &str,
        parse: impl Fn(&str) -> Result<T, E>,
        show: impl Fn(&T) -> String,
    ) -> Result<(), String> {
        if let Ok(value) = parse(text) {
            let again = parse(&show(&value))
                .map_err(|_| format!("{what}: {text:?} parsed, its canonical form did not"))?;
            if again != value {
                return Err(format!("{what}: {text:?} is not canonical: {value:?}"));
            }
        }
        Ok(())
    }
    idempotent("hold id", text, HoldId::parse, |v| v.as_str().to_owned())?;
    idempotent(
        "confirmation",
        text,
        ConfirmationNumber::parse,
        |v: &ConfirmationNumber| v.to_string(),
    )?;
    idempotent("request id", text, RequestId::parse, |v: &RequestId| {
        v.to_string()
    })?;
    idempotent("ticket id", text, TicketId::parse, |v| {
        v.as_str().to_owned()
    })?;
    idempotent("client key", text, ClientKey::parse, |v| {
        v.as_str().to_owned()
    })?;
    idempotent("event id", text, EventId::parse, |v| v.to_string())?;
    idempotent("entry id", text, EntryId::parse, |v: &EntryId| {
        v.to_string()
    })?;
    idempotent(
        "passport",
        text,
        PassportNumber::parse,
        |v: &PassportNumber| v.to_string(),
    )?;
    idempotent(
        "receipt",
        text,
        ReceiptNumber::parse,
        |v: &ReceiptNumber| v.to_string(),
    )?;
    Ok(())
}

/// A token that is not exactly one this key minted never verifies, whatever its shape.
fn forged_token_fails(keys: &AdmissionKeys, token: &str) -> Result<(), String> {
    match keys.verify(token, now()) {
        Ok(claims) => Err(format!("forged token {token:?} verified: {claims:?}")),
        Err(Error::AdmissionInvalid) | Err(Error::AdmissionExpired { .. }) => Ok(()),
        Err(other) => Err(format!("{token:?}: unexpected {other:?}")),
    }
}

/// The operator check on an arbitrary `authorization` value: never a panic, and only the
/// exact token passes.
fn operator_check(auth: &OperatorAuth, value: &[u8]) -> Result<(), String> {
    let Ok(value) = MetadataValue::try_from(value) else {
        return Ok(()); // not a legal header value: the transport refuses it before slotd
    };
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", value.clone());
    let passed = auth.check(&metadata).is_ok();
    let exact = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == OPERATOR_TOKEN);
    if passed != exact {
        return Err(format!("authorization {value:?}: passed {passed}"));
    }
    Ok(())
}

#[test]
fn the_token_corpus_replays_cleanly() {
    let keys = AdmissionKeys::new(KEY).expect("key");
    let auth = OperatorAuth::new(Some(OPERATOR_TOKEN)).expect("token");
    let ticket = TicketId::generate();
    for (path, bytes) in corpus("tokens") {
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines() {
            let found = ids_behave(line)
                .and_then(|()| forged_token_fails(&keys, line))
                .and_then(|()| operator_check(&auth, line.as_bytes()))
                .and_then(|()| {
                    keys.check_ticket_secret(&ticket, line)
                        .is_err()
                        .then_some(())
                        .ok_or_else(|| format!("{line:?} passed as a ticket secret"))
                });
            if let Err(e) = found {
                panic!("{}: {e}", path.display());
            }
        }
    }
}

#[test]
fn arbitrary_strings_parse_without_panic_and_never_verify() {
    let keys = AdmissionKeys::new(KEY).expect("key");
    let auth = OperatorAuth::new(Some(OPERATOR_TOKEN)).expect("token");
    let ticket = TicketId::generate();
    let text = prop_oneof![
        hostile_text(),
        proptest::collection::vec(
            prop::sample::select(
                "ABCDEFGHJKMNPQRSTVWXYZ0123456789abcdef-_.:= \u{0}é"
                    .chars()
                    .collect::<Vec<_>>()
            ),
            0..48
        )
        .prop_map(String::from_iter),
    ];
    let result = runner(3_000).run(&text, |line| {
        ids_behave(&line)
            .and_then(|()| forged_token_fails(&keys, &line))
            .and_then(|()| operator_check(&auth, line.as_bytes()))
            .and_then(|()| {
                keys.check_ticket_secret(&ticket, &line)
                    .is_err()
                    .then_some(())
                    .ok_or_else(|| format!("{line:?} passed as a ticket secret"))
            })
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn mutated_admission_tokens_ticket_and_entry_secrets_never_verify() {
    let keys = AdmissionKeys::new(KEY).expect("key");
    let other = AdmissionKeys::new(OTHER_KEY).expect("key");
    let ticket = TicketId::generate();
    let client = ClientKey::parse("fuzz-client.Kq7xZ2pLm9TvW4rN8sYb3c").expect("client key");
    let token = keys.mint(&ticket, &client, now() + Duration::minutes(10), now());
    let secret = keys.ticket_secret(&ticket);
    let entry = EntryId::generate();
    let entry_secret = keys.entry_secret(&entry);
    keys.check_entry_secret(&entry, &entry_secret)
        .expect("genuine entry secret");
    assert!(other.check_entry_secret(&entry, &entry_secret).is_err());
    // A ticket's secret is not an entry's with the same id text (separate HMAC domains).
    assert!(keys
        .check_entry_secret(&entry, &keys.ticket_secret(&ticket))
        .is_err());
    // The genuine ones pass (else the test below proves nothing), and only under their key.
    let (claims, id) = keys.verify(&token, now()).expect("genuine token");
    assert_eq!(id, ticket);
    assert_eq!(claims.ck, "fuzz-client.Kq7xZ2pLm9TvW4rN8sYb3c");
    assert!(other.verify(&token, now()).is_err());
    keys.check_ticket_secret(&ticket, &secret)
        .expect("genuine secret");
    assert!(other.check_ticket_secret(&ticket, &secret).is_err());
    assert!(keys
        .check_ticket_secret(&TicketId::generate(), &secret)
        .is_err());
    // Expired: refused even though the signature is good.
    assert!(matches!(
        keys.verify(&token, now() + Duration::minutes(10)),
        Err(Error::AdmissionExpired { .. })
    ));

    let edits = proptest::collection::vec(
        (
            any::<prop::sample::Index>(),
            prop::sample::select(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "
                    .chars()
                    .collect::<Vec<_>>(),
            ),
            0..3u8,
        ),
        1..4,
    );
    let result = runner(3_000).run(&edits, |edits| {
        let mutate = |original: &str| {
            let mut chars: Vec<char> = original.chars().collect();
            for (at, c, how) in &edits {
                let i = at.index(chars.len() + 1);
                match how {
                    0 if i < chars.len() => chars[i] = *c,
                    1 => chars.insert(i, *c),
                    _ if i < chars.len() => {
                        chars.remove(i);
                    }
                    _ => chars.push(*c),
                }
            }
            chars.into_iter().collect::<String>()
        };
        let forged = mutate(&token);
        if forged != token && keys.verify(&forged, now()).is_ok() {
            return Err(TestCaseError::fail(format!(
                "mutated token {forged:?} verified"
            )));
        }
        let guessed = mutate(&secret);
        if guessed != secret && keys.check_ticket_secret(&ticket, &guessed).is_ok() {
            return Err(TestCaseError::fail(format!(
                "mutated secret {guessed:?} passed"
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn random_header_bytes_never_pass_the_operator_check() {
    let auth = OperatorAuth::new(Some(OPERATOR_TOKEN)).expect("token");
    let exact = format!("Bearer {OPERATOR_TOKEN}");
    operator_check(&auth, exact.as_bytes()).expect("the exact token");
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", exact.parse().expect("ascii"));
    assert!(auth.check(&metadata).is_ok(), "the real token passes");
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3).prop_map(
            move |edits| {
                let mut b = format!("Bearer {OPERATOR_TOKEN}").into_bytes();
                for (at, byte) in edits {
                    let i = at.index(b.len());
                    b[i] = byte;
                }
                b
            }
        ),
    ];
    let result = runner(3_000).run(&bytes, |value| {
        operator_check(&auth, &value).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
