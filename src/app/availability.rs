//! Live availability of one replica: the calendar cache, the slot feed that keeps it fresh, and
//! the fan-out of seat-count changes to `WatchAvailability` streams.
//!
//! One mechanism: a day (post, category, date) is *dirty* when something changed its slots.
//! Dirty days come from two places, and both go through [`Availability::mark_dirty`]:
//! - this replica's own writes (`Slotd` marks the days it touched as soon as the store answers,
//!   so a client reads its own booking at once), and
//! - the feed: ONE task per replica tails the store's event log (`Inventory::events`: the Redis
//!   Stream every replica appends to, or the embedded store's log) every `feed_interval`, and
//!   marks the days of every event (any event with a `slot` field, plus `opened`, `closed` and
//!   `moved`), so writes of other replicas (and the hold sweeper) are seen within one tick.
//!
//! Marking a day dirty drops its cached slots, and only that day's: a write names the days it
//! touched (a reschedule both, a hold sweep the days of the holds it reclaimed) and a replayed
//! request, which writes nothing, invalidates nothing. Independently of the feed, a cached day
//! older than `cache_max_age` is read again: that is the stated staleness bound, which holds even
//! when the feed falls behind or the event log cannot be read. Misses are single-flight per
//! calendar (post, category): concurrent misses wait for one store read and are served from it.
//!
//! After each tick the feed reads every dirty day that some watcher covers ONCE, compares it
//! with what watchers were last told and hands the changed slots to the watchers of exactly
//! those days (an index from day to watchers): a tick costs one store read per dirty watched day
//! plus one delivery per (changed day, watcher of that day), never a scan of every watched range.
//! A watcher therefore costs no store read, and gets at most one update per tick.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use tokio::sync::mpsc;

use crate::domain::lifecycle::{Event, EventId, EventStart};
use crate::domain::rules::DateRange;
use crate::domain::types::{parse_date, CategoryId, DayRef, PostId, SlotState, SlotTime};
use crate::store::{Inventory, StoreError};

/// Days cached at once; past it, stale entries go first, then everything.
const MAX_CACHED_DAYS: usize = 50_000;
/// Events read per page by the feed. Small, because a page is one store reply that everything
/// behind it waits for: on Redis one `XRANGE` of 1,000 entries held the server for about 1 ms
/// and its reply the shared connection (parsed in one go, ~18,000 instructions per entry), so
/// every booking arriving then waited; 100 bounds that wait to a tenth for the same total work
/// (benches/README.md §20).
const FEED_PAGE: u32 = 100;
/// Feed messages a slow watcher may fall behind before it is sent a fresh snapshot instead.
const WATCHER_DEPTH: usize = 16;

/// Settings of the calendar cache and the slot feed (`calendar.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalendarOptions {
    /// A cached day older than this is read again, whatever the feed says; zero turns the cache
    /// off (every calendar call reads the store).
    pub cache_max_age: Duration,
    /// How often the feed reads the event log and sends watchers their changes.
    pub feed_interval: Duration,
}

impl Default for CalendarOptions {
    fn default() -> Self {
        Self {
            cache_max_age: Duration::from_millis(1_000),
            feed_interval: Duration::from_millis(250),
        }
    }
}

/// One slot's bookable seats as watchers see them (0 when full or closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSeats {
    pub time: SlotTime,
    pub seats: u32,
}

/// The slots of one day whose seat counts changed, with their new counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayChange {
    pub day: DayRef,
    pub slots: Vec<SlotSeats>,
}

/// Counters of the feed (tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Ticks that found at least one dirty watched day.
    pub ticks: u64,
    /// Store reads of a watched dirty day (one per day per tick, whatever the watcher count).
    pub day_reads: u64,
    /// Events the feed has read from the log.
    pub events: u64,
    /// Watchers now registered.
    pub watchers: u64,
    /// Store reads by calendar calls (cache misses; concurrent misses of one calendar share one).
    pub calendar_reads: u64,
    /// Feed messages handed to watchers (one per watcher per tick that changed one of its days).
    pub deliveries: u64,
}

struct Cached {
    /// None once invalidated.
    slots: Option<Arc<[SlotState]>>,
    /// When the read that filled it started, or when it was invalidated.
    stamp: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WatchKey {
    post: PostId,
    category: CategoryId,
    from: NaiveDate,
    to: NaiveDate,
}

impl WatchKey {
    fn days(&self) -> impl Iterator<Item = DayRef> + '_ {
        DateRange {
            from: self.from,
            to: self.to,
        }
        .days()
        .map(|date| DayRef {
            post: self.post.clone(),
            category: self.category.clone(),
            date,
        })
    }
}

/// Where the feed hands one watcher its changes.
struct Sink {
    tx: mpsc::Sender<Arc<Vec<DayChange>>>,
    /// Set when a message did not fit: the watcher starts over from a snapshot.
    lagged: Arc<std::sync::atomic::AtomicBool>,
}

/// Registered watchers, indexed by the days they cover (the feed's fan-out reads only the
/// watchers of a changed day).
#[derive(Default)]
struct Watchers {
    next_id: u64,
    sinks: HashMap<u64, Sink>,
    by_day: HashMap<DayRef, HashSet<u64>>,
}

/// What a watcher receives next.
#[derive(Debug)]
pub enum WatchEvent {
    /// Changes of the watcher's days (only those), at most one per feed tick.
    Changes(Arc<Vec<DayChange>>),
    /// The watcher fell behind the feed: it should start over from a fresh snapshot.
    Lagged,
    /// The replica's feed is gone.
    Closed,
}

/// A registered watcher; dropping it unregisters the range.
pub struct Watch {
    owner: Arc<Availability>,
    id: u64,
    key: WatchKey,
    rx: mpsc::Receiver<Arc<Vec<DayChange>>>,
    lagged: Arc<std::sync::atomic::AtomicBool>,
}

impl Watch {
    /// The next feed message for this watcher.
    pub async fn next(&mut self) -> WatchEvent {
        if self.lagged.swap(false, Ordering::AcqRel) {
            while self.rx.try_recv().is_ok() {}
            return WatchEvent::Lagged;
        }
        match self.rx.recv().await {
            Some(changes) => WatchEvent::Changes(changes),
            None => WatchEvent::Closed,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = self.owner.lock_watches();
        watchers.sinks.remove(&self.id);
        let mut gone = Vec::new();
        for day in self.key.days() {
            if let Some(ids) = watchers.by_day.get_mut(&day) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    watchers.by_day.remove(&day);
                    gone.push(day);
                }
            }
        }
        drop(watchers);
        if !gone.is_empty() {
            // Nobody watches these days now: what watchers were told is no base any more.
            let mut told = lock(&self.owner.told);
            for day in &gone {
                told.remove(day);
            }
        }
        self.owner.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The lock under which one calendar's misses read the store.
type Flight = Arc<tokio::sync::Mutex<()>>;

pub struct Availability {
    options: CalendarOptions,
    cache: Mutex<HashMap<DayRef, Cached>>,
    /// Days marked since the feed's last tick.
    dirty: Mutex<HashSet<DayRef>>,
    /// Registered watchers and the days each covers.
    watches: Mutex<Watchers>,
    /// What watchers were last told per watched day (the feed's diff base).
    told: Mutex<HashMap<DayRef, BTreeMap<SlotTime, u32>>>,
    /// One lock per calendar (post, category): a miss reads the store under it, so concurrent
    /// misses wait for one read instead of each reading (single flight). Bounded by the
    /// catalog: callers check the post and category first.
    flights: Mutex<HashMap<(PostId, CategoryId), Flight>>,
    ticks: AtomicU64,
    calendar_reads: AtomicU64,
    deliveries: AtomicU64,
    day_reads: AtomicU64,
    events: AtomicU64,
    watchers: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Availability {
    pub fn new(options: CalendarOptions) -> Self {
        Self {
            options,
            cache: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            watches: Mutex::new(Watchers::default()),
            told: Mutex::new(HashMap::new()),
            flights: Mutex::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            calendar_reads: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            day_reads: AtomicU64::new(0),
            events: AtomicU64::new(0),
            watchers: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> CalendarOptions {
        self.options
    }

    pub fn stats(&self) -> FeedStats {
        FeedStats {
            ticks: self.ticks.load(Ordering::Relaxed),
            day_reads: self.day_reads.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            watchers: self.watchers.load(Ordering::Relaxed),
            calendar_reads: self.calendar_reads.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
        }
    }

    fn lock_watches(&self) -> MutexGuard<'_, Watchers> {
        lock(&self.watches)
    }

    /// Something changed the day's slots: drop its cached copy and tell the feed.
    pub fn mark_dirty(&self, day: DayRef) {
        if !self.options.cache_max_age.is_zero() {
            lock(&self.cache).insert(
                day.clone(),
                Cached {
                    slots: None,
                    stamp: Instant::now(),
                },
            );
        }
        lock(&self.dirty).insert(day);
    }

    /// Every day of the range is dirty.
    pub fn mark_range_dirty(&self, post: &PostId, category: &CategoryId, range: DateRange) {
        for date in range.days() {
            self.mark_dirty(DayRef {
                post: post.clone(),
                category: category.clone(),
                date,
            });
        }
    }

    /// The slots of every day of the range, per day in date order (days without slots are
    /// left out), from the cache where fresh, else with one store read of the range. Concurrent
    /// misses of one calendar are single-flight: the first reads, the others wait for it and
    /// are served from what it cached.
    pub async fn days(
        &self,
        store: &dyn Inventory,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<Arc<[SlotState]>>, StoreError> {
        let max_age = self.options.cache_max_age;
        if max_age.is_zero() {
            self.calendar_reads.fetch_add(1, Ordering::Relaxed);
            let slots = store.slots(post, category, range).await?;
            return Ok(split_days(slots).into_values().collect());
        }
        if let Some(days) = self.cached(post, category, range) {
            return Ok(days);
        }
        let flight = lock(&self.flights)
            .entry((post.clone(), category.clone()))
            .or_default()
            .clone();
        let _flight = flight.lock().await;
        // Whoever held the lock before may have just read these days.
        if let Some(days) = self.cached(post, category, range) {
            return Ok(days);
        }
        let started = Instant::now();
        self.calendar_reads.fetch_add(1, Ordering::Relaxed);
        let slots = store.slots(post, category, range).await?;
        let mut by_day: BTreeMap<NaiveDate, Arc<[SlotState]>> = split_days(slots);
        let mut key = DayRef {
            post: post.clone(),
            category: category.clone(),
            date: range.from,
        };
        let mut cache = lock(&self.cache);
        if cache.len() + 366 > MAX_CACHED_DAYS {
            let now = Instant::now();
            cache.retain(|_, c| c.slots.is_some() && now.duration_since(c.stamp) < max_age);
            if cache.len() + 366 > MAX_CACHED_DAYS {
                cache.clear();
            }
        }
        let empty: Arc<[SlotState]> = Arc::from(Vec::new());
        for date in range.days() {
            key.date = date;
            let slots = by_day.get(&date).cloned().unwrap_or_else(|| empty.clone());
            // A day invalidated after this read started keeps its invalidation: the read may
            // predate the write.
            let newer = cache.get(&key).is_some_and(|c| c.stamp > started);
            if !newer {
                cache.insert(
                    key.clone(),
                    Cached {
                        slots: Some(slots),
                        stamp: started,
                    },
                );
            }
        }
        by_day.retain(|_, s| !s.is_empty());
        Ok(by_day.into_values().collect())
    }

    /// Every day of the range from the cache, if all are there and fresh.
    fn cached(
        &self,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Option<Vec<Arc<[SlotState]>>> {
        let max_age = self.options.cache_max_age;
        let mut key = DayRef {
            post: post.clone(),
            category: category.clone(),
            date: range.from,
        };
        let cache = lock(&self.cache);
        let now = Instant::now();
        let mut out = Vec::new();
        for date in range.days() {
            key.date = date;
            match cache.get(&key) {
                Some(Cached {
                    slots: Some(slots),
                    stamp,
                }) if now.duration_since(*stamp) < max_age => {
                    if !slots.is_empty() {
                        out.push(slots.clone());
                    }
                }
                _ => return None,
            }
        }
        Some(out)
    }

    /// Registers a watcher of the range; it receives every later feed message that changes
    /// one of its days.
    pub fn watch(
        self: &Arc<Self>,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Watch {
        let key = WatchKey {
            post: post.clone(),
            category: category.clone(),
            from: range.from,
            to: range.to,
        };
        // Registered before the caller reads its snapshot, so no change falls between the two.
        let (tx, rx) = mpsc::channel(WATCHER_DEPTH);
        let lagged = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut watchers = self.lock_watches();
        let id = watchers.next_id;
        watchers.next_id += 1;
        watchers.sinks.insert(
            id,
            Sink {
                tx,
                lagged: lagged.clone(),
            },
        );
        for day in key.days() {
            watchers.by_day.entry(day).or_default().insert(id);
        }
        drop(watchers);
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            owner: self.clone(),
            id,
            key,
            rx,
            lagged,
        }
    }

    /// A registered watcher's first view of its range (`days`), which also becomes the feed's
    /// diff base for the days that have none yet: the watcher's first update then carries only
    /// what changed after its snapshot.
    pub async fn snapshot(
        &self,
        store: &dyn Inventory,
        post: &PostId,
        category: &CategoryId,
        range: DateRange,
    ) -> Result<Vec<Arc<[SlotState]>>, StoreError> {
        let days = self.days(store, post, category, range).await?;
        let mut told = lock(&self.told);
        for day in &days {
            if let Some(first) = day.first() {
                told.entry(first.slot.day())
                    .or_insert_with(|| day.iter().map(|s| (s.slot.time, s.bookable())).collect());
            }
        }
        Ok(days)
    }

    fn watched(&self, day: &DayRef) -> bool {
        self.lock_watches().by_day.contains_key(day)
    }

    /// The feed: tails the event log from now on and broadcasts changes, until aborted.
    pub async fn run_feed(self: Arc<Self>, store: Arc<dyn Inventory>) {
        let interval = self.options.feed_interval;
        let mut after: Option<EventId> = None;
        let mut first = true;
        loop {
            // On the replica's grid (`cadence`): with the room's ticks, one wake-up of Redis.
            if !first {
                super::cadence::next_point(interval).await;
            }
            first = false;
            match after {
                None => match store.events(EventStart::Latest, 0).await {
                    Ok(page) => after = Some(page.next),
                    Err(e) => tracing::warn!(error = %e, "slot feed: event log unreadable"),
                },
                Some(ref mut position) => {
                    if let Err(e) = self.read_events(store.as_ref(), position, FEED_PAGE).await {
                        // The cache bound still holds: entries expire by age.
                        tracing::warn!(error = %e, "slot feed: event log unreadable");
                    }
                }
            }
            if let Err(e) = self.publish(store.as_ref()).await {
                tracing::warn!(error = %e, "slot feed: reading changed days failed");
            }
        }
    }

    /// Reads the log from `position` to its end in pages of `page` events; returns the pages.
    async fn read_events(
        &self,
        store: &dyn Inventory,
        position: &mut EventId,
        page: u32,
    ) -> Result<u32, StoreError> {
        let mut pages = 0;
        loop {
            let read = store.events(EventStart::After(*position), page).await?;
            pages += 1;
            let full = read.events.len() >= page as usize;
            for event in &read.events {
                for day in dirty_days(event) {
                    self.mark_dirty(day);
                }
            }
            // Counted once their days are marked (tests wait on it).
            self.events
                .fetch_add(read.events.len() as u64, Ordering::Relaxed);
            *position = read.next;
            if !full {
                return Ok(pages);
            }
        }
    }

    /// Reads each dirty watched day once and hands what changed to the watchers of that day.
    async fn publish(&self, store: &dyn Inventory) -> Result<(), StoreError> {
        let mut dirty = Vec::new();
        for day in std::mem::take(&mut *lock(&self.dirty)) {
            if self.watched(&day) {
                dirty.push(day);
            } else {
                // Nobody watches it now: what watchers were told of it is no base any more.
                lock(&self.told).remove(&day);
            }
        }
        if dirty.is_empty() {
            return Ok(());
        }
        self.ticks.fetch_add(1, Ordering::Relaxed);
        let mut changes = Vec::new();
        for (i, day) in dirty.iter().enumerate() {
            let range = DateRange {
                from: day.date,
                to: day.date,
            };
            let started = Instant::now();
            let slots = match store.slots(&day.post, &day.category, range).await {
                Ok(slots) => slots,
                Err(e) => {
                    // Try these days again next tick.
                    lock(&self.dirty).extend(dirty[i..].iter().cloned());
                    return Err(e);
                }
            };
            self.day_reads.fetch_add(1, Ordering::Relaxed);
            let now: BTreeMap<SlotTime, u32> =
                slots.iter().map(|s| (s.slot.time, s.bookable())).collect();
            if !self.options.cache_max_age.is_zero() {
                let mut cache = lock(&self.cache);
                let newer = cache.get(day).is_some_and(|c| c.stamp > started);
                if !newer {
                    cache.insert(
                        day.clone(),
                        Cached {
                            slots: Some(Arc::from(slots)),
                            stamp: started,
                        },
                    );
                }
            }
            let mut told = lock(&self.told);
            let before = told.get(day);
            let changed: Vec<SlotSeats> = now
                .iter()
                .filter(|(t, n)| before.and_then(|b| b.get(t)) != Some(n))
                .map(|(t, n)| SlotSeats {
                    time: *t,
                    seats: *n,
                })
                .chain(
                    // Slots that disappeared count as 0 seats.
                    before
                        .into_iter()
                        .flat_map(|b| b.keys())
                        .filter(|t| !now.contains_key(t))
                        .map(|t| SlotSeats { time: *t, seats: 0 }),
                )
                .collect();
            told.insert(day.clone(), now);
            if !changed.is_empty() {
                changes.push(DayChange {
                    day: day.clone(),
                    slots: changed,
                });
            }
        }
        if !changes.is_empty() {
            self.deliver(changes);
        }
        Ok(())
    }

    /// Hands each watcher the changes of its days: the cost is one step per (changed day,
    /// watcher of that day), whatever else is watched.
    fn deliver(&self, changes: Vec<DayChange>) {
        let watchers = self.lock_watches();
        let mut batches: HashMap<u64, Vec<DayChange>> = HashMap::new();
        for change in changes {
            if let Some(ids) = watchers.by_day.get(&change.day) {
                for id in ids {
                    batches.entry(*id).or_default().push(change.clone());
                }
            }
        }
        for (id, batch) in batches {
            let Some(sink) = watchers.sinks.get(&id) else {
                continue;
            };
            self.deliveries.fetch_add(1, Ordering::Relaxed);
            match sink.tx.try_send(Arc::new(batch)) {
                Ok(()) => {}
                // A slow watcher: it starts over from a snapshot instead.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    sink.lagged.store(true, Ordering::Release);
                }
                // The watcher is leaving; its Drop unregisters it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

/// Groups a range's slots (ordered by date and time) by date.
fn split_days(slots: Vec<SlotState>) -> BTreeMap<NaiveDate, Arc<[SlotState]>> {
    let mut by_day: BTreeMap<NaiveDate, Vec<SlotState>> = BTreeMap::new();
    for s in slots {
        by_day.entry(s.slot.date).or_default().push(s);
    }
    by_day.into_iter().map(|(d, s)| (d, Arc::from(s))).collect()
}

/// `POST/CAT/DATE` or `POST/CAT/DATE HH:MM` (how events name days and slots).
pub fn parse_day_label(text: &str) -> Option<DayRef> {
    let day = text.split(' ').next()?;
    let mut parts = day.split('/');
    let post = PostId::parse(parts.next()?).ok()?;
    let category = CategoryId::parse(parts.next()?).ok()?;
    let date = parse_date(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(DayRef {
        post,
        category,
        date,
    })
}

/// The days an event changed: its `slot` (any kind, including kinds this version does not
/// know), `moved`'s `from` and `to`, `closed`'s `day`, `opened`'s range.
pub fn dirty_days(event: &Event) -> Vec<DayRef> {
    let mut days = Vec::new();
    for field in ["slot", "from", "to", "day"] {
        if field != "slot" && !matches!(event.kind.as_str(), "moved" | "closed") {
            continue;
        }
        if let Some(day) = event.field(field).and_then(parse_day_label) {
            if !days.contains(&day) {
                days.push(day);
            }
        }
    }
    if event.kind == "opened" {
        let post = event.field("post").and_then(|p| PostId::parse(p).ok());
        let category = event
            .field("category")
            .and_then(|c| CategoryId::parse(c).ok());
        let from = event.field("from").and_then(|d| parse_date(d).ok());
        let to = event.field("to").and_then(|d| parse_date(d).ok());
        if let (Some(post), Some(category), Some(from), Some(to)) = (post, category, from, to) {
            if let Ok(range) = DateRange::new(from, to) {
                days.extend(range.days().map(|date| DayRef {
                    post: post.clone(),
                    category: category.clone(),
                    date,
                }));
            }
        }
    }
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, fields: &[(&str, &str)]) -> Event {
        Event {
            id: EventId::default(),
            kind: kind.into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn label(day: &DayRef) -> String {
        day.to_string()
    }

    /// The feed reads a log longer than its page in several bounded pages (each one store reply
    /// that other calls wait behind) and still marks every day.
    #[tokio::test]
    async fn the_feed_reads_a_long_log_in_bounded_pages_and_marks_every_day() {
        use crate::domain::rules::OpenPlan;
        let store = crate::store::memory::MemoryStore::new();
        let availability = Availability::new(CalendarOptions::default());
        let mut position = store
            .events(EventStart::Latest, 0)
            .await
            .expect("events")
            .next;
        let first = parse_date("2030-01-14").expect("date");
        for i in 0..25 {
            let date = first + chrono::Duration::days(i);
            let plan = OpenPlan {
                post: PostId::parse("BEIJING").expect("post"),
                category: CategoryId::parse("ALL_OTHERS").expect("category"),
                range: DateRange::new(date, date).expect("range"),
                weekdays: (0..7)
                    .filter_map(|d| chrono::Weekday::try_from(d).ok())
                    .collect(),
                first: SlotTime::parse("08:00").expect("time"),
                last: SlotTime::parse("08:00").expect("time"),
                seats: 5,
            };
            store
                .open_slots(&plan, chrono::Utc::now())
                .await
                .expect("open");
        }
        let pages = availability
            .read_events(&store, &mut position, 10)
            .await
            .expect("read");
        assert_eq!(pages, 3, "25 events in pages of 10");
        assert_eq!(availability.events.load(Ordering::Relaxed), 25);
        assert_eq!(
            lock(&availability.dirty).len(),
            25,
            "every opened day is dirty"
        );
        // Caught up: the next read is one empty page.
        assert_eq!(
            availability
                .read_events(&store, &mut position, 10)
                .await
                .expect("read"),
            1
        );
        assert_eq!(availability.events.load(Ordering::Relaxed), 25);
    }

    #[test]
    fn events_name_the_days_they_changed() {
        let booked = event("booked", &[("slot", "BEIJING/ALL_OTHERS/2030-01-14 08:00")]);
        assert_eq!(
            dirty_days(&booked).iter().map(label).collect::<Vec<_>>(),
            ["BEIJING/ALL_OTHERS/2030-01-14"]
        );
        // A kind this version does not know still dirties its slot.
        let offered = event(
            "offered",
            &[("slot", "BEIJING/ALL_OTHERS/2030-01-15 09:00")],
        );
        assert_eq!(dirty_days(&offered).len(), 1);
        let moved = event(
            "moved",
            &[
                ("from", "BEIJING/ALL_OTHERS/2030-01-14 08:00"),
                ("to", "BEIJING/ALL_OTHERS/2030-01-16 08:00"),
            ],
        );
        assert_eq!(dirty_days(&moved).len(), 2);
        let closed = event(
            "closed",
            &[("day", "BEIJING/ALL_OTHERS/2030-01-14"), ("time", "")],
        );
        assert_eq!(dirty_days(&closed).len(), 1);
        let opened = event(
            "opened",
            &[
                ("post", "BEIJING"),
                ("category", "ALL_OTHERS"),
                ("from", "2030-01-14"),
                ("to", "2030-01-20"),
            ],
        );
        assert_eq!(dirty_days(&opened).len(), 7);
        // `from`/`to` of an `opened` event are dates, not days; a receipt names none.
        assert!(dirty_days(&event("receipt_registered", &[("receipt", "R1")])).is_empty());
        assert!(dirty_days(&event("booked", &[("slot", "garbage")])).is_empty());
    }
}
