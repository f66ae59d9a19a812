//! The one backend matrix: every suite that runs on several backends lists its cases once in
//! `backend_matrix!(runner; case_a, case_b, ...)`, which makes `memory::case_a`,
//! `redis::case_a` and `cluster::case_a` tests, each calling `runner(Backend::new(kind),
//! case_a)`. The runner turns the backend into what the suite's cases take (a store, a server,
//! two replicas). One backend of one suite:
//! `cargo test --test integration conformance::redis::`.
//!
//! `Backend::new` is cheap: the embedded store is made fresh in process, and Redis and Redis
//! Cluster are a fresh key space (`redis.tag`) on the one server or cluster of the test binary,
//! started lazily by the first test that needs it (tests/support/redis.rs, cluster.rs).

use std::sync::Arc;

use slotd::store::memory::room::MemoryWaitingRoom;
use slotd::store::memory::MemoryStore;
use slotd::store::room::WaitingRoomStore;
use slotd::store::Inventory;

use super::redis::Tenant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Redis,
    Cluster,
}

/// One test's deployment of a backend: the embedded store and room (shared in process by every
/// replica, as one process would), or one key space on the shared Redis or Redis Cluster.
pub enum Backend {
    Memory {
        store: Arc<MemoryStore>,
        room: Arc<MemoryWaitingRoom>,
    },
    Redis(Tenant),
    Cluster(Tenant),
}

impl Backend {
    pub fn new(kind: Kind) -> Self {
        match kind {
            Kind::Memory => Backend::Memory {
                store: Arc::new(MemoryStore::new()),
                room: Arc::new(MemoryWaitingRoom::new()),
            },
            Kind::Redis => Backend::Redis(super::redis::tenant()),
            Kind::Cluster => Backend::Cluster(super::cluster::tenant()),
        }
    }

    /// A handle on the inventory: on Redis a new connection per call (one per replica).
    pub fn store(&self) -> Arc<dyn Inventory> {
        match self {
            Backend::Memory { store, .. } => store.clone(),
            Backend::Redis(t) | Backend::Cluster(t) => t.store(),
        }
    }

    /// A handle on the waiting room: on Redis a new connection per call.
    pub fn room(&self) -> Arc<dyn WaitingRoomStore> {
        match self {
            Backend::Memory { room, .. } => room.clone(),
            Backend::Redis(t) | Backend::Cluster(t) => t.room(),
        }
    }
}

/// See the module comment. `backend_matrix!(run; a, b)` needs, in the invoking module, the case
/// functions `a`, `b` and `async fn run(backend: Backend, case: impl AsyncFnOnce(..))`.
#[macro_export]
macro_rules! backend_matrix {
    ($run:ident; $($name:ident),* $(,)?) => {
        $crate::backend_matrix!(@kind memory Memory $run; $($name),*);
        $crate::backend_matrix!(@kind redis Redis $run; $($name),*);
        $crate::backend_matrix!(@kind cluster Cluster $run; $($name),*);
    };
    (@kind $module:ident $kind:ident $run:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::support::backend::Backend::new(
                        $crate::support::backend::Kind::$kind,
                    );
                    super::$run(backend, super::$name).await;
                }
            )*
        }
    };
}
