//! Booking straight on the stores (no gRPC): the embedded store, the Redis store, and the Redis
//! connection seam itself (one multiplexed connection vs a deadpool pool), each swept over
//! 1, 16 and 128 concurrent callers. Receipts are registered outside the timed section
//! (`iter_custom`); an element is one confirmed booking (or one script call for `redis_conn`).
//! `book_redis` also prints Redis µs per booking: `cmdstat_fcall` usec read around every timed
//! batch (warm-up included), divided by the bookings those batches made.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::future::join_all;
use tokio::runtime::Runtime;

use slotd::api::convert;
use slotd::domain::types::ConfirmationNumber;
use slotd::store::memory::MemoryStore;
use slotd::store::redis::{ConnOptions, RedisOptions, RedisStore};
use slotd::store::Inventory;

use support::{booking, next_applicant, open_request, receipt, RedisServer, CONCURRENCY};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `cmdstat_fcall` usec summed over the timed batches of `book_redis`, and their bookings.
static FCALL_USEC: AtomicU64 = AtomicU64::new(0);
static FCALL_BOOKINGS: AtomicU64 = AtomicU64::new(0);

/// `cmdstat_fcall`'s usec from `INFO commandstats` (0 before any FCALL).
fn fcall_usec(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_fcall:"))
        .and_then(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Registers `n` fresh receipts (untimed), then times `n` bookings made by `concurrency` callers.
/// With `redis` (the store's server), adds the batch's FCALL usec to `FCALL_USEC`.
async fn book_batch(
    store: &Arc<dyn Inventory>,
    n: u64,
    concurrency: usize,
    redis: Option<&redis::Client>,
) -> Duration {
    let ids: Vec<u32> = (0..n).map(|_| next_applicant()).collect();
    for chunk in ids.chunks(256) {
        join_all(chunk.iter().map(|&i| {
            let store = store.clone();
            async move { store.register_receipt(&receipt(i)).await.expect("receipt") }
        }))
        .await;
    }
    let bookings: Vec<_> = ids.iter().map(|&i| booking(i)).collect();
    let per_worker = bookings.len().div_ceil(concurrency.max(1)).max(1);
    let mut stats = redis.map(|c| c.get_connection().expect("redis stats connection"));
    let usec_before = stats.as_mut().map(fcall_usec);
    let start = Instant::now();
    join_all(bookings.chunks(per_worker).map(|chunk| {
        let store = store.clone();
        async move {
            for b in chunk {
                store
                    .book(b, &ConfirmationNumber::generate(), Utc::now())
                    .await
                    .expect("booked");
            }
        }
    }))
    .await;
    let elapsed = start.elapsed();
    if let (Some(conn), Some(before)) = (stats.as_mut(), usec_before) {
        FCALL_USEC.fetch_add(fcall_usec(conn).saturating_sub(before), Ordering::Relaxed);
        FCALL_BOOKINGS.fetch_add(n, Ordering::Relaxed);
    }
    elapsed
}

fn bench_book(
    c: &mut Criterion,
    name: &str,
    rt: &Runtime,
    store: Arc<dyn Inventory>,
    redis: Option<redis::Client>,
) {
    let plan = convert::open_plan(&open_request()).expect("plan");
    rt.block_on(store.open_slots(&plan, Utc::now()))
        .expect("open slots");
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for concurrency in CONCURRENCY {
        // One iteration is `concurrency` bookings, so throughput reads as bookings per second.
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(rt).iter_custom(|iters| {
                    let store = store.clone();
                    let redis = redis.clone();
                    async move {
                        let n = iters * concurrency as u64;
                        book_batch(&store, n, concurrency, redis.as_ref()).await
                    }
                })
            },
        );
        let (usec, booked) = (
            FCALL_USEC.swap(0, Ordering::Relaxed),
            FCALL_BOOKINGS.swap(0, Ordering::Relaxed),
        );
        if redis.is_some() && booked > 0 {
            println!(
                "{name}/{concurrency}: Redis {:.2} µs per booking (cmdstat_fcall, {booked} bookings)",
                usec as f64 / booked as f64
            );
        }
    }
    group.finish();
}

fn book_embedded(c: &mut Criterion) {
    let rt = runtime();
    bench_book(c, "book_embedded", &rt, Arc::new(MemoryStore::new()), None);
}

fn book_redis(c: &mut Criterion) {
    let rt = runtime();
    let redis = RedisServer::start();
    let store = rt.block_on(async {
        RedisStore::connect(&RedisOptions {
            conn: ConnOptions {
                url: redis.url(),
                response_timeout: Duration::from_secs(20),
                ..ConnOptions::default()
            },
            ..RedisOptions::default()
        })
        .expect("redis store")
    });
    let stats = redis::Client::open(redis.url()).expect("redis url");
    bench_book(c, "book_redis", &rt, Arc::new(store), Some(stats));
}

/// The connection seam (src/store/redis/conn.rs): the same one-key decrement script through
/// one multiplexed `ConnectionManager` and through a deadpool-redis pool of 16 connections.
fn redis_conn(c: &mut Criterion) {
    const SCRIPT: &str = "return redis.call('HINCRBY', KEYS[1], 'b', -1)";
    let rt = runtime();
    let redis = RedisServer::start();
    let script = redis::Script::new(SCRIPT);
    let client = redis::Client::open(redis.url()).expect("url");
    let manager = rt
        .block_on(redis::aio::ConnectionManager::new(client))
        .expect("connection manager");
    let pool = deadpool_redis::Config::from_url(redis.url())
        .builder()
        .expect("pool builder")
        .max_size(16)
        .runtime(deadpool_redis::Runtime::Tokio1)
        .build()
        .expect("pool");
    let mut group = c.benchmark_group("redis_conn");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for concurrency in CONCURRENCY {
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_with_input(
            BenchmarkId::new("multiplexed", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&rt).iter(|| {
                    join_all((0..concurrency).map(|_| {
                        let mut m = manager.clone();
                        let script = &script;
                        async move {
                            let _: i64 = script
                                .key("bench:{b}:day")
                                .invoke_async(&mut m)
                                .await
                                .expect("script");
                        }
                    }))
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("deadpool16", concurrency),
            &concurrency,
            |b, &concurrency| {
                b.to_async(&rt).iter(|| {
                    join_all((0..concurrency).map(|_| {
                        let pool = &pool;
                        let script = &script;
                        async move {
                            let mut conn = pool.get().await.expect("pooled connection");
                            let _: i64 = script
                                .key("bench:{b}:day")
                                .invoke_async(&mut *conn)
                                .await
                                .expect("script");
                        }
                    }))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, book_embedded, book_redis, redis_conn);
criterion_main!(benches);
