//! What the benches share: a throwaway redis-server (a minimal copy of tests/support/redis.rs,
//! since benches cannot import tests/), and builders for slots, receipts and bookings made
//! through the API's own conversions so the benches book exactly what a client would.
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, NaiveDate, Utc};
use tempfile::TempDir;

use slotd::api::{convert, pb};
use slotd::domain::rules::Booking;
use slotd::domain::types::Receipt;

/// Concurrency levels every bench sweeps.
pub const CONCURRENCY: [usize; 3] = [1, 16, 128];

/// Days the benches open (from tomorrow at the post), 16 slots each.
pub const DAYS: u32 = 60;

/// A redis-server on a free 127.0.0.1 port in its own temp dir, without persistence (the
/// benches measure CPU and round trips; durability costs are measured separately in
/// benches/README.md), killed on drop.
pub struct RedisServer {
    port: u16,
    _dir: TempDir,
    child: Child,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory-policy", "noeviction"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let server = Self {
            port,
            _dir: dir,
            child,
        };
        let client = redis::Client::open(server.url()).expect("redis url");
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get_connection_with_timeout(Duration::from_millis(200))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn first_day() -> NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        + Days::days(1)
}

pub fn date(i: u32) -> String {
    (first_day() + Days::days(i64::from(i)))
        .format("%Y-%m-%d")
        .to_string()
}

/// Opens `DAYS` days, 08:00-11:45, 10,000 seats per slot, on BEIJING/ALL_OTHERS.
pub fn open_request() -> pb::OpenSlotsRequest {
    pb::OpenSlotsRequest {
        post_id: "BEIJING".into(),
        category: "ALL_OTHERS".into(),
        from_date: date(0),
        to_date: date(DAYS - 1),
        weekdays: (1..=7).collect(),
        first_time: "08:00".into(),
        last_time: "11:45".into(),
        seats_per_slot: 10_000,
    }
}

static NEXT_APPLICANT: AtomicU32 = AtomicU32::new(1);

/// A fresh applicant number: every booking needs its own passport and receipt.
pub fn next_applicant() -> u32 {
    NEXT_APPLICANT.fetch_add(1, Ordering::Relaxed)
}

pub fn applicant(i: u32) -> pb::Applicant {
    pb::Applicant {
        passport_number: format!("B{i:09}"),
        given_name: "Bench".into(),
        surname: "Mark".into(),
        ds160_confirmation: format!("AA{i:08}"),
        receipt_number: format!("RB{i:09}"),
    }
}

pub fn receipt_request(i: u32) -> pb::RegisterReceiptRequest {
    let a = applicant(i);
    pb::RegisterReceiptRequest {
        receipt_number: a.receipt_number,
        passport_number: a.passport_number,
        paid_at: (Utc::now() - Days::days(1)).to_rfc3339(),
        amount: "185.00".into(),
        currency: "USD".into(),
    }
}

pub fn receipt(i: u32) -> Receipt {
    convert::receipt(&receipt_request(i)).expect("valid receipt")
}

/// Applicant `i` books a slot chosen from `i` (spread over every opened slot).
pub fn book_request(i: u32) -> pb::BookAppointmentRequest {
    let minutes = 8 * 60 + 15 * (i % 16);
    pb::BookAppointmentRequest {
        request_id: format!("bench-{i}"),
        slot: Some(pb::SlotRef {
            post_id: "BEIJING".into(),
            category: "ALL_OTHERS".into(),
            date: date((i / 16) % DAYS),
            time: format!("{:02}:{:02}", minutes / 60, minutes % 60),
        }),
        applicants: vec![applicant(i)],
    }
}

pub fn booking(i: u32) -> Booking {
    convert::booking(&book_request(i)).expect("valid booking")
}
