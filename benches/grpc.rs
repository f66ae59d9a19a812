//! End to end through tonic on loopback, against the embedded store so the figures isolate the
//! gRPC path: BookAppointment, ListSlots, WaitingRoomService.Join (room enabled through
//! AdminService.ConfigureWaitingRoom), and Health/Check as the ceiling, each swept over 1, 16 and
//! 128 concurrent callers sharing 4 HTTP/2 connections.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint};

use slotd::api::auth::OperatorAuth;
use slotd::api::pb;
use slotd::api::pb::admin_service_client::AdminServiceClient;
use slotd::api::pb::booking_service_client::BookingServiceClient;
use slotd::api::pb::calendar_service_client::CalendarServiceClient;
use slotd::api::pb::waiting_room_service_client::WaitingRoomServiceClient;
use slotd::app::room::Room;
use slotd::app::Slotd;
use slotd::config::LimitSettings;
use slotd::domain::admission::AdmissionKeys;
use slotd::domain::catalog::Catalog;
use slotd::domain::clock::{Clock, SystemClock};
use slotd::server::{serve, ServeOptions};
use slotd::store::memory::room::MemoryWaitingRoom;
use slotd::store::memory::MemoryStore;
use slotd::store::Inventory;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use support::{book_request, date, next_applicant, open_request, receipt, CONCURRENCY};

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const CONNECTIONS: usize = 4;

struct Bench {
    rt: Runtime,
    store: Arc<dyn Inventory>,
    channels: Vec<Channel>,
}

impl Bench {
    /// slotd in process on 127.0.0.1:0 (rate limits out of the way: every caller is one peer).
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let store: Arc<dyn Inventory> = Arc::new(MemoryStore::new());
        let addr: SocketAddr = rt.block_on(async {
            let clock = Arc::new(SystemClock) as Arc<dyn Clock>;
            let catalog = Arc::new(Catalog::builtin().expect("catalog"));
            let app = Slotd::new(catalog, store.clone(), clock.clone());
            let room = Room::new(
                AdmissionKeys::random(),
                Arc::new(MemoryWaitingRoom::new()),
                clock,
            );
            let auth = OperatorAuth::new(Some(ADMIN_TOKEN)).expect("token");
            let options = ServeOptions {
                limits: LimitSettings {
                    booking_per_minute: u32::MAX,
                    booking_burst: u32::MAX,
                    calendar_per_minute: u32::MAX,
                    calendar_burst: u32::MAX,
                    ..LimitSettings::default()
                },
                ..ServeOptions::default()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(async move {
                let _ = serve(listener, app, room, auth, options, std::future::pending()).await;
            });
            addr
        });
        let channels = rt.block_on(async {
            let mut channels = Vec::new();
            for _ in 0..CONNECTIONS {
                channels.push(
                    Endpoint::from_shared(format!("http://{addr}"))
                        .expect("endpoint")
                        .tcp_nodelay(true)
                        .connect()
                        .await
                        .expect("connect"),
                );
            }
            channels
        });
        let bench = Self {
            rt,
            store,
            channels,
        };
        let mut admin = AdminServiceClient::new(bench.channels[0].clone());
        bench
            .rt
            .block_on(admin.open_slots(admin_request(open_request())))
            .expect("open slots");
        bench
    }

    fn channel(&self, i: usize) -> Channel {
        self.channels[i % CONNECTIONS].clone()
    }
}

fn admin_request<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().expect("ascii"),
    );
    request
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    group
}

fn grpc(c: &mut Criterion) {
    let bench = Bench::start();
    let rt = &bench.rt;

    let mut group = configure(c, "grpc_ping");
    for n in CONCURRENCY {
        group.throughput(Throughput::Elements(n as u64));
        let clients: Vec<_> = (0..n)
            .map(|i| HealthClient::new(bench.channel(i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(rt).iter(|| {
                join_all(clients.iter().cloned().map(|mut client| async move {
                    client
                        .check(HealthCheckRequest::default())
                        .await
                        .expect("health");
                }))
            })
        });
    }
    group.finish();

    let mut group = configure(c, "grpc_book");
    for n in CONCURRENCY {
        group.throughput(Throughput::Elements(n as u64));
        let clients: Vec<_> = (0..n)
            .map(|i| BookingServiceClient::new(bench.channel(i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(rt).iter_custom(|iters| {
                let clients = clients.clone();
                let store = bench.store.clone();
                async move {
                    // Untimed: a fresh registered receipt for every booking.
                    let per_client: Vec<Vec<u32>> = clients
                        .iter()
                        .map(|_| (0..iters).map(|_| next_applicant()).collect())
                        .collect();
                    for ids in &per_client {
                        for &i in ids {
                            store.register_receipt(&receipt(i)).await.expect("receipt");
                        }
                    }
                    let start = Instant::now();
                    join_all(clients.into_iter().zip(per_client).map(
                        |(mut client, ids)| async move {
                            for i in ids {
                                client
                                    .book_appointment(book_request(i))
                                    .await
                                    .expect("booked");
                            }
                        },
                    ))
                    .await;
                    start.elapsed()
                }
            })
        });
    }
    group.finish();

    let mut group = configure(c, "grpc_list_slots");
    for n in CONCURRENCY {
        group.throughput(Throughput::Elements(n as u64));
        let clients: Vec<_> = (0..n)
            .map(|i| CalendarServiceClient::new(bench.channel(i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(rt).iter(|| {
                join_all(
                    clients
                        .iter()
                        .cloned()
                        .enumerate()
                        .map(|(i, mut client)| async move {
                            client
                                .list_slots(pb::ListSlotsRequest {
                                    post_id: "BEIJING".into(),
                                    category: "ALL_OTHERS".into(),
                                    date: date(i as u32 % 30),
                                })
                                .await
                                .expect("list slots");
                        }),
                )
            })
        });
    }
    group.finish();

    let mut admin = AdminServiceClient::new(bench.channel(0));
    rt.block_on(
        admin.configure_waiting_room(admin_request(pb::ConfigureWaitingRoomRequest {
            config: Some(pb::WaitingRoomConfig {
                enabled: true,
                admissions_per_minute: 6_000_000,
                max_active_sessions: 10_000_000,
                session_duration_seconds: 300,
                waiter_timeout_seconds: 60,
                paused: false,
                gate_calendar: false,
            }),
        })),
    )
    .expect("enable the waiting room");
    let keys = AtomicU64::new(0);
    let mut group = configure(c, "grpc_join");
    for n in CONCURRENCY {
        group.throughput(Throughput::Elements(n as u64));
        let clients: Vec<_> = (0..n)
            .map(|i| WaitingRoomServiceClient::new(bench.channel(i)))
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(rt).iter(|| {
                join_all(clients.iter().cloned().map(|mut client| {
                    let key = keys.fetch_add(1, Ordering::Relaxed);
                    async move {
                        client
                            .join(pb::JoinRequest {
                                client_key: format!("bench-{key}.Kq7xZ2pLm9TvW4rN8sYb3c"),
                            })
                            .await
                            .expect("join");
                    }
                }))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, grpc);
criterion_main!(benches);
