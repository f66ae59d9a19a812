//! slotd's Redis Functions library: every Lua operation of the Redis store and the waiting room,
//! loaded with `FUNCTION LOAD` and called with `FCALL`, so SLOWLOG, MONITOR and `INFO
//! commandstats` name the operation (`FCALL slotd_<version>_book ...`).
//!
//! The sources stay one readable `.lua` file per operation (`lua/`, each with its KEYS / ARGV /
//! returns / invariants header). The library is assembled here, once per process, from
//! `include_str!` of those files, in this order:
//! 1. `#!lua name=slotd_<version>` and the generated constants (`CONSTANTS`: Rust values, so no
//!    number is copied by hand between Rust and Lua) and the library-level `KEYS`, `ARGV`;
//! 2. the shared helpers, `holds_lib.lua` and `waitlist_lib.lua`, as library-level `local`
//!    functions (a functions library may create no global);
//! 3. one `redis.register_function` per operation file, whose callback sets `KEYS`, `ARGV` to its
//!    call's keys and arguments and runs the file's text (after `cluster_guard.lua` on a Redis
//!    Cluster for the operations it guards, after `room_lib.lua` for the room operations: both
//!    are per-call preludes, `room_lib` binds that call's ten room keys).
//!
//! Why assembly at start-up and not build.rs: the constants are the crate's own (`domain::room`,
//! `domain::waitlist`, `store`), which a build script cannot import, and the two variants
//! (plain, cluster-guarded) are chosen by `redis.url` at run time; assembling takes well under a
//! millisecond, once per process.
//!
//! Version: the first 12 hex digits of SHA-256 over the assembled text (with the version left
//! out), so the library name and every function name change with any byte of any file or
//! constant. Two slotd builds therefore load two libraries side by side during a rolling upgrade
//! (Redis refuses two libraries registering one function name, hence the version in each
//! function name too), and `slotd redis prune-functions` deletes the versions no running replica
//! marks as in use (`in_use_key`).
//!
//! Error lines: Redis names a failing line `user_function:<line>` of the library; `locate`
//! rewrites it to `<file>.lua:<line>` with the line map kept here, so an error names the real
//! file and line.

use std::sync::OnceLock;

use ::redis::Value;
use sha2::{Digest, Sha256};

use super::conn::Conn;
use crate::store::StoreError;

/// The event stream's approximate length bound (`XADD ... MAXLEN ~`), in the library as
/// `EVENTS_MAXLEN`.
pub const EVENTS_MAXLEN: u64 = 1_000_000;

/// How long a finished waitlist entry stays readable (its holder can read how it ended), in the
/// library as `WAITLIST_ENDED_KEEP_SECS`.
pub const WAITLIST_ENDED_KEEP_SECS: u64 = 30 * 24 * 60 * 60;

/// What every library name starts with (`FUNCTION LIST LIBRARYNAME slotd_*`).
pub const LIBRARY_PREFIX: &str = "slotd_";

/// The numbers Rust and Lua share, emitted as `local NAME = value` at the top of the library.
fn constants() -> Vec<(&'static str, String)> {
    use crate::domain::room::{RoomConfig, OUTAGE_GAP_MS, RATE_WINDOW_SECS};
    let room = RoomConfig::default();
    vec![
        ("EVENTS_MAXLEN", EVENTS_MAXLEN.to_string()),
        (
            "OFFER_SCAN_LIMIT",
            crate::domain::waitlist::OFFER_SCAN_LIMIT.to_string(),
        ),
        (
            "WAITLIST_ENDED_KEEP_SECS",
            WAITLIST_ENDED_KEEP_SECS.to_string(),
        ),
        (
            "REASON_DATES_PASSED",
            format!("'{}'", crate::domain::waitlist::DATES_PASSED),
        ),
        ("RATE_WINDOW_MS", (RATE_WINDOW_SECS * 1000).to_string()),
        ("BATCH_MAX", crate::store::room::BATCH_MAX.to_string()),
        ("OUTAGE_GAP_MS", OUTAGE_GAP_MS.to_string()),
        (
            "ENDED_TTL_MS",
            (crate::store::room::ENDED_TICKET_TTL_SECS * 1000).to_string(),
        ),
        ("ROOM_DEFAULT_RATE", room.admissions_per_minute.to_string()),
        ("ROOM_DEFAULT_CAP", room.max_active_sessions.to_string()),
        (
            "ROOM_DEFAULT_SESSION_SECS",
            room.session_duration_secs.to_string(),
        ),
        (
            "ROOM_DEFAULT_TIMEOUT_SECS",
            room.waiter_timeout_secs.to_string(),
        ),
    ]
}

/// What runs before an operation's own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prelude {
    /// Nothing.
    None,
    /// `cluster_guard.lua` on a Redis Cluster (the operations that build keys themselves).
    Guarded,
    /// `room_lib.lua` (the waiting room's ten keys and helpers).
    Room,
}

/// Every operation: its name (the `Op` and the function name's tail), its file and prelude.
const OPS: &[(Op, &str, &str, Prelude)] = &[
    (
        Op::OpenSlots,
        "open_slots.lua",
        include_str!("lua/open_slots.lua"),
        Prelude::Guarded,
    ),
    (
        Op::SetCapacity,
        "set_capacity.lua",
        include_str!("lua/set_capacity.lua"),
        Prelude::Guarded,
    ),
    (
        Op::CloseSlots,
        "close_slots.lua",
        include_str!("lua/close_slots.lua"),
        Prelude::None,
    ),
    (
        Op::Book,
        "book.lua",
        include_str!("lua/book.lua"),
        Prelude::Guarded,
    ),
    (
        Op::Cancel,
        "cancel.lua",
        include_str!("lua/cancel.lua"),
        Prelude::Guarded,
    ),
    (
        Op::RegisterReceipt,
        "register_receipt.lua",
        include_str!("lua/register_receipt.lua"),
        Prelude::None,
    ),
    (
        Op::Audit,
        "audit.lua",
        include_str!("lua/audit.lua"),
        Prelude::None,
    ),
    (
        Op::Manifest,
        "manifest.lua",
        include_str!("lua/manifest.lua"),
        Prelude::None,
    ),
    (
        Op::Hold,
        "hold.lua",
        include_str!("lua/hold.lua"),
        Prelude::Guarded,
    ),
    (
        Op::ConfirmHold,
        "confirm_hold.lua",
        include_str!("lua/confirm_hold.lua"),
        Prelude::Guarded,
    ),
    (
        Op::ReleaseHold,
        "release_hold.lua",
        include_str!("lua/release_hold.lua"),
        Prelude::Guarded,
    ),
    (
        Op::Reclaim,
        "reclaim.lua",
        include_str!("lua/reclaim.lua"),
        Prelude::Guarded,
    ),
    (
        Op::Reschedule,
        "reschedule.lua",
        include_str!("lua/reschedule.lua"),
        Prelude::Guarded,
    ),
    (
        Op::WlJoin,
        "wl_join.lua",
        include_str!("lua/wl_join.lua"),
        Prelude::Guarded,
    ),
    (
        Op::WlLeave,
        "wl_leave.lua",
        include_str!("lua/wl_leave.lua"),
        Prelude::Guarded,
    ),
    (
        Op::WlRetire,
        "wl_retire.lua",
        include_str!("lua/wl_retire.lua"),
        Prelude::Guarded,
    ),
    (
        Op::ApptRetire,
        "appt_retire.lua",
        include_str!("lua/appt_retire.lua"),
        Prelude::None,
    ),
    (
        Op::ApptExpire,
        "appt_expire.lua",
        include_str!("lua/appt_expire.lua"),
        Prelude::None,
    ),
    (
        Op::DayRetire,
        "day_retire.lua",
        include_str!("lua/day_retire.lua"),
        Prelude::None,
    ),
    (
        Op::BackfillScan,
        "backfill_scan.lua",
        include_str!("lua/backfill_scan.lua"),
        Prelude::None,
    ),
    (
        Op::Layout,
        "layout.lua",
        include_str!("lua/layout.lua"),
        Prelude::Guarded,
    ),
    (
        Op::RoomJoin,
        "room_join.lua",
        include_str!("lua/room_join.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomStatus,
        "room_status.lua",
        include_str!("lua/room_status.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomEnd,
        "room_end.lua",
        include_str!("lua/room_end.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomAdvance,
        "room_advance.lua",
        include_str!("lua/room_advance.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomSync,
        "room_sync.lua",
        include_str!("lua/room_sync.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomTick,
        "room_tick.lua",
        include_str!("lua/room_tick.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomConfigure,
        "room_configure.lua",
        include_str!("lua/room_configure.lua"),
        Prelude::Room,
    ),
    (
        Op::RoomStats,
        "room_stats.lua",
        include_str!("lua/room_stats.lua"),
        Prelude::Room,
    ),
];

/// The library-level helpers, in load order (waitlist_lib uses holds_lib's).
const HELPERS: &[(&str, &str)] = &[
    ("holds_lib.lua", include_str!("lua/holds_lib.lua")),
    ("waitlist_lib.lua", include_str!("lua/waitlist_lib.lua")),
];

const CLUSTER_GUARD: (&str, &str) = ("cluster_guard.lua", include_str!("lua/cluster_guard.lua"));
const ROOM_LIB: (&str, &str) = ("room_lib.lua", include_str!("lua/room_lib.lua"));

/// One operation of the library (one `.lua` file, one registered function).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    OpenSlots,
    SetCapacity,
    CloseSlots,
    Book,
    Cancel,
    RegisterReceipt,
    Audit,
    Manifest,
    Hold,
    ConfirmHold,
    ReleaseHold,
    Reclaim,
    Reschedule,
    WlJoin,
    WlLeave,
    WlRetire,
    ApptRetire,
    ApptExpire,
    DayRetire,
    BackfillScan,
    Layout,
    RoomJoin,
    RoomStatus,
    RoomEnd,
    RoomAdvance,
    RoomSync,
    RoomTick,
    RoomConfigure,
    RoomStats,
}

impl Op {
    /// The function name's tail: the operation file's stem.
    fn stem(self) -> &'static str {
        OPS.iter()
            .find(|(op, ..)| *op == self)
            .map(|(_, file, ..)| file.trim_end_matches(".lua"))
            .unwrap_or("unknown")
    }
}

/// Where a run of library lines comes from.
#[derive(Debug, Clone)]
struct Segment {
    /// First library line (1-based) of the run.
    first: usize,
    /// Number of lines.
    lines: usize,
    /// The file, or "generated" for lines slotd writes itself.
    file: &'static str,
    /// The file's line at `first`.
    file_first: usize,
}

/// The assembled library of one variant (plain or cluster-guarded).
#[derive(Debug)]
pub struct Library {
    name: String,
    source: String,
    segments: Vec<Segment>,
}

const VERSION_SLOT: &str = "@VERSION@";

struct Builder {
    text: String,
    line: usize,
    segments: Vec<Segment>,
}

impl Builder {
    fn generated(&mut self, text: &str) {
        self.add("generated", 1, text);
    }

    /// Appends `text` (whole lines), whose first line is line `file_first` of `file`.
    fn add(&mut self, file: &'static str, file_first: usize, text: &str) {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let lines = text.split('\n').count();
        self.segments.push(Segment {
            first: self.line,
            lines,
            file,
            file_first,
        });
        self.text.push_str(text);
        self.text.push('\n');
        self.line += lines;
    }
}

/// An operation file without its `#!lua flags=...` line: (flags, first line, body).
fn split_shebang(source: &str) -> (Vec<&str>, usize, &str) {
    match source.strip_prefix("#!lua") {
        Some(rest) => {
            let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
            let flags = line
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("flags="))
                .flat_map(|f| f.split(','))
                .filter(|f| !f.is_empty())
                .collect();
            (flags, 2, body)
        }
        None => (Vec::new(), 1, source),
    }
}

impl Library {
    fn assemble(cluster: bool) -> Self {
        let mut b = Builder {
            text: String::new(),
            line: 1,
            segments: Vec::new(),
        };
        b.generated(&format!(
            "#!lua name={LIBRARY_PREFIX}{VERSION_SLOT}\n\
             -- slotd's Redis Functions library (src/store/redis/functions.rs assembles it from\n\
             -- src/store/redis/lua/*.lua; {} variant). Generated: do not edit.\n\
             -- The call's keys and arguments, set by each function before its body runs.\n\
             local KEYS, ARGV",
            if cluster {
                "Redis Cluster"
            } else {
                "single server"
            }
        ));
        let constants = constants()
            .into_iter()
            .map(|(name, value)| format!("local {name} = {value}"))
            .collect::<Vec<_>>()
            .join("\n");
        b.generated(&format!("-- Constants from Rust.\n{constants}"));
        for (file, text) in HELPERS {
            b.add(file, 1, text);
        }
        for (op, file, source, prelude) in OPS {
            let (flags, body_first, body) = split_shebang(source);
            let flags = flags
                .iter()
                .map(|f| format!("'{f}'"))
                .collect::<Vec<_>>()
                .join(", ");
            b.generated(&format!(
                "redis.register_function{{function_name = '{LIBRARY_PREFIX}{VERSION_SLOT}_{}', \
                 flags = {{{flags}}}, callback = function(keys, args)\n\
                 KEYS, ARGV = keys, args",
                op.stem()
            ));
            match prelude {
                Prelude::Guarded if cluster => b.add(CLUSTER_GUARD.0, 1, CLUSTER_GUARD.1),
                Prelude::Room => b.add(ROOM_LIB.0, 1, ROOM_LIB.1),
                _ => {}
            }
            b.add(file, body_first, body);
            b.generated("end}");
        }
        let digest = Sha256::digest(b.text.as_bytes());
        let version = hex::encode(&digest[..6]);
        Self {
            name: format!("{LIBRARY_PREFIX}{version}"),
            source: b.text.replace(VERSION_SLOT, &version),
            segments: b.segments,
        }
    }

    /// The library of this variant, assembled once per process.
    pub fn get(cluster: bool) -> &'static Library {
        static PLAIN: OnceLock<Library> = OnceLock::new();
        static CLUSTER: OnceLock<Library> = OnceLock::new();
        if cluster {
            CLUSTER.get_or_init(|| Self::assemble(true))
        } else {
            PLAIN.get_or_init(|| Self::assemble(false))
        }
    }

    /// `slotd_<version>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text `FUNCTION LOAD` takes.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The registered name of `op` in this version.
    pub fn function(&self, op: Op) -> String {
        format!("{}_{}", self.name, op.stem())
    }

    /// `file.lua:line` of library line `line`.
    fn place(&self, line: usize) -> Option<String> {
        let s = self
            .segments
            .iter()
            .find(|s| line >= s.first && line < s.first + s.lines)?;
        Some(format!("{}:{}", s.file, s.file_first + (line - s.first)))
    }

    /// `text` with every `user_function:<line>` (how Redis names a library line) replaced by
    /// the file and line it comes from.
    pub fn locate(&self, text: &str) -> String {
        const MARK: &str = "user_function:";
        let mut out = String::with_capacity(text.len() + 32);
        let mut rest = text;
        while let Some(at) = rest.find(MARK) {
            let after = &rest[at + MARK.len()..];
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            let place = after[..digits]
                .parse()
                .ok()
                .and_then(|line| self.place(line));
            out.push_str(&rest[..at]);
            match place {
                Some(place) => out.push_str(&place),
                None => out.push_str(&rest[at..at + MARK.len() + digits]),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }
}

/// The key a running replica refreshes (with a TTL) to say it uses library `name`; prune keeps
/// every version with such a key. No hash tag: libraries belong to a Redis server, not to one
/// deployment's tag, so every deployment sharing the server keeps its versions.
pub fn in_use_key(name: &str) -> String {
    format!("slotd:functions:in-use:{name}")
}

/// How long an in-use mark lives without being refreshed.
pub const IN_USE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// How often a replica refreshes its mark (from the health loop's ping).
pub const IN_USE_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Every `.lua` source file the library is assembled from, with its name (for tests).
pub fn sources() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = HELPERS.to_vec();
    all.push(CLUSTER_GUARD);
    all.push(ROOM_LIB);
    all.extend(OPS.iter().map(|(_, file, source, _)| (*file, *source)));
    all
}

/// What `prune` found: each slotd library with why it stays, and those deleted.
#[derive(Debug, Default)]
pub struct Pruned {
    /// (library, why it stays: "this build" or "in use").
    pub kept: Vec<(String, &'static str)>,
    pub deleted: Vec<String>,
}

/// The library names of a `FUNCTION LIST` answer.
fn library_names(value: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Array(libraries) = value else {
        return Vec::new();
    };
    libraries
        .iter()
        .filter_map(|library| match library {
            Value::Array(fields) => fields
                .chunks(2)
                .find(|pair| text(&pair[0]).as_deref() == Some("library_name"))
                .and_then(|pair| pair.get(1).and_then(text)),
            Value::Map(fields) => fields
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some("library_name"))
                .and_then(|(_, v)| text(v)),
            _ => None,
        })
        .collect()
}

/// `slotd redis prune-functions`: deletes, on every primary, each slotd library that is neither
/// this build's (either variant) nor marked in use by a running replica (`in_use_key`, refreshed
/// every `IN_USE_REFRESH`, lapsing after `IN_USE_TTL`). A replica whose version was deleted
/// anyway (it started between the listing and the delete) loads it again at its next call.
pub async fn prune(conn: &Conn, dry_run: bool) -> Result<Pruned, StoreError> {
    let what = "prune functions";
    let list = ::redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg(format!("{LIBRARY_PREFIX}*"))
        .to_owned();
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for (node, answer) in conn.every_primary(what, &list).await? {
        let answer = answer.map_err(|e| StoreError::Unavailable {
            detail: format!("{what}: FUNCTION LIST on {node}: {e}"),
        })?;
        for name in library_names(&answer) {
            match found.iter_mut().find(|(n, _)| *n == name) {
                Some((_, nodes)) => nodes.push(node.clone()),
                None => found.push((name, vec![node.clone()])),
            }
        }
    }
    found.sort();
    let own = [Library::get(false).name(), Library::get(true).name()];
    let mut pruned = Pruned::default();
    for (name, _nodes) in found {
        if !name.starts_with(LIBRARY_PREFIX) {
            continue;
        }
        if own.contains(&name.as_str()) {
            pruned.kept.push((name, "this build"));
            continue;
        }
        let marked = conn
            .cmd(what, ::redis::cmd("EXISTS").arg(in_use_key(&name)))
            .await?;
        if matches!(marked, Value::Int(n) if n > 0) {
            pruned.kept.push((name, "in use"));
            continue;
        }
        if !dry_run {
            let delete = ::redis::cmd("FUNCTION").arg("DELETE").arg(&name).to_owned();
            for (node, answer) in conn.every_primary(what, &delete).await? {
                // A primary that never had it (or lost it) has nothing to delete.
                if let Err(e) = answer {
                    if !e.contains("Library not found") {
                        return Err(StoreError::Unavailable {
                            detail: format!("{what}: FUNCTION DELETE {name} on {node}: {e}"),
                        });
                    }
                }
            }
        }
        pruned.deleted.push(name);
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_library_maps_back_to_its_file() {
        for cluster in [false, true] {
            let lib = Library::get(cluster);
            let lines: Vec<&str> = lib.source().split('\n').collect();
            for (file, text) in sources() {
                let file_lines: Vec<&str> = text.split('\n').collect();
                for (i, line) in lines.iter().enumerate() {
                    let Some(place) = lib.place(i + 1) else {
                        continue;
                    };
                    let Some(n) = place.strip_prefix(&format!("{file}:")) else {
                        continue;
                    };
                    let n: usize = n.parse().expect("line number");
                    assert_eq!(
                        file_lines[n - 1],
                        *line,
                        "{place} differs from library line {}",
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn the_version_names_the_library_and_every_function_and_differs_by_variant() {
        let (plain, cluster) = (Library::get(false), Library::get(true));
        assert_ne!(plain.name(), cluster.name());
        for lib in [plain, cluster] {
            assert!(lib
                .source()
                .starts_with(&format!("#!lua name={}\n", lib.name())));
            assert!(!lib.source().contains(VERSION_SLOT));
            let book = lib.function(Op::Book);
            assert!(lib.source().contains(&format!("'{book}'")), "{book}");
            assert!(book.starts_with(lib.name()));
        }
        assert!(cluster.source().contains("cluster_guard"));
        assert!(!plain.source().contains("probe:a"));
        // Read-only operations keep their no-writes flag.
        assert!(plain.source().contains(&format!(
            "'{}', flags = {{'no-writes'}}",
            plain.function(Op::Audit)
        )));
    }

    #[test]
    fn locate_rewrites_library_lines_to_files() {
        let lib = Library::get(false);
        let line = lib
            .source()
            .split('\n')
            .position(|l| l.contains("local function remembered("))
            .expect("remembered")
            + 1;
        let text = format!(
            "ERR user_function:{line}: boom script: x, on @user_function:{line}. user_function:x"
        );
        let located = lib.locate(&text);
        assert!(
            !located.contains(&format!("user_function:{line}")),
            "{located}"
        );
        assert!(located.contains("@holds_lib.lua:"), "{located}");
        assert!(located.ends_with("user_function:x"), "{located}");
    }

    /// Constants once: a number the library gets from Rust is never written in a .lua file.
    #[test]
    fn no_lua_file_spells_a_generated_constant() {
        for (file, text) in sources() {
            for (name, value) in constants() {
                assert!(
                    !text.contains(&format!("local {name} =")),
                    "{file} defines {name} itself"
                );
                // The distinctive values (small ones like 60, 600, 1000 also occur as units).
                let distinctive = [
                    "EVENTS_MAXLEN",
                    "OFFER_SCAN_LIMIT",
                    "WAITLIST_ENDED_KEEP_SECS",
                    "OUTAGE_GAP_MS",
                    "ENDED_TTL_MS",
                ];
                if distinctive.contains(&name) {
                    let spelled = text
                        .lines()
                        .filter(|l| !l.trim_start().starts_with("--"))
                        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()))
                        .any(|word| word == value);
                    assert!(!spelled, "{file} spells {name} ({value})");
                }
            }
            assert!(!text.contains("30 * 24 * 60 * 60"), "{file}");
            assert!(
                !text.contains(&format!("'{}'", crate::domain::waitlist::DATES_PASSED)),
                "{file} spells the DATES_PASSED reason"
            );
        }
    }
}
