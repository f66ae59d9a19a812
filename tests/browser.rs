//! The reference pages in a real browser: Debian's `chromium`, headless, driven by Debian's
//! `chromium-driver` (chromedriver) over the W3C WebDriver protocol (a few JSON calls, sent
//! here on a plain TcpStream), against the real binary started with `--demo --web`.
//!
//! Screenshots of each step go to `target/browser-screenshots/` (or `$SLOTD_SCREENSHOTS`).
//! Without chromium and chromedriver the tests print a loud SKIP and pass, unless
//! `SLOTD_REQUIRE_BROWSER=1` (CI: `.ci/browser-deps.sh` installs them), when they fail.
//! `SLOTD_CHROMIUM` / `SLOTD_CHROMEDRIVER` override the Debian paths.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use support::flow::{connect, real_date};
use support::process::Slotd;
use support::{admin, client_key, free_port};

/// Debian's paths; `SLOTD_CHROMIUM` / `SLOTD_CHROMEDRIVER` point elsewhere.
fn chromium() -> String {
    std::env::var("SLOTD_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("SLOTD_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver and a browser session; both end when dropped.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    shots: PathBuf,
}

/// The browser, or None (after a loud skip) when it is not installed and not required.
fn browser(test: &str) -> Option<Browser> {
    let (chromium, chromedriver) = (chromium(), chromedriver());
    let present = Path::new(&chromium).exists() && Path::new(&chromedriver).exists();
    if !present {
        if std::env::var("SLOTD_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("SLOTD_REQUIRE_BROWSER=1 but {chromium} or {chromedriver} is missing: run .ci/browser-deps.sh");
        }
        eprintln!(
            "\n========================================================================\n\
             SKIP {test}: {chromium} / {chromedriver} not installed (apt-get install chromium\n\
             chromium-driver, or .ci/browser-deps.sh). Set SLOTD_REQUIRE_BROWSER=1 to fail instead.\n\
             ========================================================================\n"
        );
        return None;
    }
    let port = free_port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let mut b = Browser {
        driver,
        port,
        session: String::new(),
        shots: std::env::var_os("SLOTD_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser-screenshots")
            })
            .join(test),
    };
    std::fs::create_dir_all(&b.shots).expect("screenshot dir");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, status)) = b.request("GET", "/status", None) {
            if status["value"]["ready"] == json!(true) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = b.post(
        "/session",
        json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1000,1100", "--lang=zh-CN", "--hide-scrollbars"]
            }
        }}}),
    );
    b.session = created["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    eprintln!("screenshots of {test}: {}", b.shots.display());
    Some(b)
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.request("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )?;
        // chromedriver keeps the connection open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut byte = [0u8; 4096];
        let (head_len, length) = loop {
            let n = stream.read(&mut byte)?;
            if n == 0 {
                return Err(std::io::Error::other("chromedriver closed the connection"));
            }
            raw.extend_from_slice(&byte[..n]);
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (end + 4, length);
            }
        };
        while raw.len() < head_len + length {
            let n = stream.read(&mut byte)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&byte[..n]);
        }
        let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
        let body = String::from_utf8_lossy(&raw[head_len..]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, value) = self
            .request(method, &path, body.as_ref())
            .expect("webdriver request");
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.request("POST", path, Some(&body)).expect("webdriver");
        assert_eq!(status, 200, "POST {path}: {value}");
        value["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn refresh(&self) {
        self.call("POST", "/refresh", Some(json!({})));
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn element(&self, css: &str) -> String {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found[ELEMENT].as_str().expect("element id").to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn clear_and_type(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.call("GET", &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls `script` (an expression) until it is truthy, up to a generous 30 s.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(&format!("return ({script});"));
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what} ({script}); page: {}",
                self.js("return document.body.innerText;")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 png"))
            .expect("png");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).expect("write screenshot");
    }

    fn fill_applicant(&self, i: usize, a: &pb::Applicant) {
        for (field, value) in [
            ("passport_number", &a.passport_number),
            ("surname", &a.surname),
            ("given_name", &a.given_name),
            ("ds160_confirmation", &a.ds160_confirmation),
            ("receipt_number", &a.receipt_number),
        ] {
            self.clear_and_type(&format!("#applicants-{i}-{field}"), value);
        }
    }
}

fn demo(i: u32, given: &str) -> pb::Applicant {
    let (passport, receipt) = slotd::demo::demo_applicant(i);
    pb::Applicant {
        passport_number: passport,
        given_name: given.into(),
        surname: "Wang".into(),
        ds160_confirmation: format!("AA{i:08}"),
        receipt_number: receipt,
    }
}

fn room(enabled: bool, paused: bool) -> pb::ConfigureWaitingRoomRequest {
    pb::ConfigureWaitingRoomRequest {
        config: Some(pb::WaitingRoomConfig {
            enabled,
            admissions_per_minute: 600,
            max_active_sessions: 100,
            session_duration_seconds: 900,
            waiter_timeout_seconds: 300,
            paused,
            gate_calendar: false,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_journey_waits_survives_a_reload_is_admitted_books_and_prints() {
    let Some(b) = browser("journey") else {
        return;
    };
    let slotd = Slotd::start_args(0, &["--demo", "--web"], &[]);
    let addr = slotd.addr();
    let channel = connect(&addr).await;
    let mut operator = AdminServiceClient::new(channel.clone());
    operator
        .configure_waiting_room(admin(room(true, true)))
        .await
        .expect("room on, paused");
    // Two people in line before the browser.
    let mut line = WaitingRoomServiceClient::new(channel.clone());
    for who in ["ahead-1", "ahead-2"] {
        line.join(pb::JoinRequest {
            client_key: client_key(who),
        })
        .await
        .expect("join");
    }

    let b = tokio::task::block_in_place(|| {
        b.go(&format!("http://{addr}/"));
        b.wait_for(
            "a place in line",
            "document.getElementById('room-position').textContent === '3'",
        );
        let ticket = b.text("#room-ticket");
        assert_eq!(b.text("#room-ahead"), "2");
        assert!(b.text("#room h2").contains("等候室"), "Chinese first");
        b.screenshot("1-waiting-room");

        b.refresh();
        b.wait_for(
            "the place after a reload",
            "document.getElementById('room-position').textContent === '3'",
        );
        assert_eq!(
            b.text("#room-ticket"),
            ticket,
            "the same place after a reload"
        );
        b.screenshot("2-waiting-room-after-reload");
        b
    });

    operator
        .configure_waiting_room(admin(room(true, false)))
        .await
        .expect("admit");

    let confirmation = tokio::task::block_in_place(|| {
        b.wait_for(
            "admission moves on to the calendar",
            "document.body.dataset.view === 'calendar'",
        );
        b.wait_for(
            "dates",
            "document.querySelectorAll('#dates button.date').length > 0",
        );
        b.click("#lang");
        assert_eq!(
            b.text("#calendar h2"),
            "Choose a date",
            "English after the switch"
        );
        b.screenshot("3-calendar");
        b.click("#dates button.date");
        b.wait_for(
            "times",
            "document.querySelectorAll('#times button.time').length > 0",
        );
        let first_time = b.text("#times button.time");
        assert!(first_time.starts_with("08:00"), "{first_time}");
        b.screenshot("4-times");
        b.click("#times button.time");
        b.wait_for(
            "the booking form",
            "document.body.dataset.view === 'booking'",
        );
        b.click("#add-dependent");
        b.fill_applicant(0, &demo(1, "Fang"));
        b.fill_applicant(1, &demo(2, "Ming"));
        b.screenshot("5-booking");
        b.click("#book");
        b.wait_for(
            "the confirmation",
            "document.body.dataset.view === 'confirmation'",
        );
        b.wait_for(
            "the letter with its QR code",
            "document.getElementById('letter').contentDocument.querySelector('svg.qr') !== null",
        );
        b.screenshot("6-confirmation");
        let number = b.text("#confirmation-number");
        let letter = b
            .js("return document.getElementById('letter').srcdoc;")
            .as_str()
            .expect("srcdoc")
            .to_owned();
        let svg = &letter[letter.find("<svg").expect("svg")..];
        assert_eq!(
            support::qr::scan(svg),
            number,
            "the QR code scans to the confirmation number"
        );
        for needle in [
            "申请人数量 Number of applicants: 2",
            "FANG",
            "MING",
            "北京市朝阳区安家楼路55号",
        ] {
            assert!(letter.contains(needle), "{needle} missing from the letter");
        }
        number
    });

    // The booking is real: the server has it, for both applicants.
    let appointment = BookingServiceClient::new(channel)
        .get_appointment(pb::GetAppointmentRequest {
            confirmation_number: confirmation,
            passport_number: demo(2, "Ming").passport_number,
        })
        .await
        .expect("booked")
        .into_inner()
        .appointment
        .expect("appointment");
    assert_eq!(appointment.applicants.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_booking_shows_the_message_beside_the_field_the_server_names() {
    let Some(b) = browser("refused") else {
        return;
    };
    let slotd = Slotd::start_args(0, &["--demo", "--web"], &[]);
    let addr = slotd.addr();
    let channel = connect(&addr).await;
    // Receipt 5 is used already (the room is off: no admission needed).
    let dates =
        slotd::api::pb::calendar_service_client::CalendarServiceClient::new(channel.clone())
            .list_available_dates(pb::ListAvailableDatesRequest {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                from_date: real_date(0),
                to_date: real_date(30),
            })
            .await
            .expect("dates")
            .into_inner();
    let date = dates.dates[0].date.clone();
    BookingServiceClient::new(channel)
        .book_appointment(pb::BookAppointmentRequest {
            request_id: "used-receipt".into(),
            slot: Some(pb::SlotRef {
                post_id: "BEIJING".into(),
                category: "ALL_OTHERS".into(),
                date,
                time: "09:00".into(),
            }),
            applicants: vec![demo(5, "Lei")],
        })
        .await
        .expect("the first booking of receipt 5");

    tokio::task::block_in_place(|| {
        b.go(&format!("http://{addr}/"));
        b.wait_for(
            "the calendar (room off)",
            "document.body.dataset.view === 'calendar'",
        );
        b.wait_for(
            "dates",
            "document.querySelectorAll('#dates button.date').length > 0",
        );
        b.click("#dates button.date");
        b.wait_for(
            "times",
            "document.querySelectorAll('#times button.time').length > 0",
        );
        b.click("#times button.time");
        b.wait_for(
            "the booking form",
            "document.body.dataset.view === 'booking'",
        );

        // A malformed DS-160 number: the BadRequest names the field.
        let mut bad = demo(5, "Lei");
        bad.ds160_confirmation = "XX1".into();
        b.fill_applicant(0, &bad);
        b.click("#book");
        let beside = b.wait_for(
            "the DS-160 message",
            "document.getElementById('error-applicants-0-ds160_confirmation').textContent",
        );
        assert!(!beside.as_str().unwrap_or_default().is_empty());
        assert_eq!(b.text("#error-applicants-0-receipt_number"), "");

        // The used receipt: ErrorInfo names it, the page puts it beside the receipt field.
        b.clear_and_type("#applicants-0-ds160_confirmation", "AA00000005");
        b.click("#book");
        let beside = b.wait_for(
            "the receipt message",
            "document.getElementById('error-applicants-0-receipt_number').textContent",
        );
        let beside = beside.as_str().unwrap_or_default().to_owned();
        assert!(beside.contains("DEMO000005"), "{beside}");
        assert_eq!(b.text("#error-applicants-0-ds160_confirmation"), "");
        assert_eq!(
            b.js("return document.getElementById('applicants-0-receipt_number').classList.contains('invalid');"),
            json!(true)
        );
        assert_eq!(b.js("return document.body.dataset.view;"), json!("booking"));
        b.screenshot("7-refused-used-receipt");
    });
}
