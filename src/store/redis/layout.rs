//! The deployment's key layout version (`lua/layout.lua`, docs/redis-keys.md "Key layout
//! versions and migration"): slotd checks it when it starts and refuses data of the previous
//! layout; `slotd redis migrate` moves such data on.

use super::codec::{at, status_reply, text, uint, unexpected};
use super::RedisStore;
use crate::store::StoreError;

/// The layout this build writes (the marker `slotd:{T}:layout`).
pub const LAYOUT: &str = "2";

/// Keys one migration step's SCAN looks at.
const MIGRATE_SCAN_COUNT: u32 = 1000;

/// What the start-up check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutCheck {
    /// This build's layout (marked now if the deployment held no key of an older one).
    Current,
    /// Data this build must not serve: the layout found (`"1"`, or an unknown marker) and what
    /// to do, for the operator.
    Refused { found: String, advice: String },
}

impl RedisStore {
    /// Checks the deployment's key layout (one `layout` call): layout-1 data (a day's
    /// manifest sorted set) or an unknown marker is refused; an empty or layout-2 deployment
    /// passes (and is marked).
    pub async fn check_layout(&self) -> Result<LayoutCheck, StoreError> {
        let what = "layout check";
        let mut invocation = self.scripts.layout.key(self.keys.layout());
        invocation
            .key(self.keys.days_due())
            .arg("check")
            .arg(self.keys.prefix());
        let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
        match status.as_str() {
            "OK" => Ok(LayoutCheck::Current),
            "LAYOUT" => {
                let found = text(what, at(what, &items, 0)?)?;
                let advice = if found == "1" {
                    let day = items
                        .get(1)
                        .and_then(|d| text(what, d).ok())
                        .unwrap_or_default();
                    format!(
                        "Redis holds slotd data of key layout 1 under {prefix} (e.g. the manifest \
                         of {day}) and this slotd writes layout {LAYOUT}: stop every slotd replica \
                         of the previous version, run `slotd redis migrate` with the same Redis \
                         settings, then start this version (docs/redis-keys.md, \"Key layout \
                         versions and migration\")",
                        prefix = self.keys.prefix(),
                    )
                } else {
                    format!(
                        "Redis marks {prefix} as key layout {found}, which this slotd (layout \
                         {LAYOUT}) does not know: run the slotd version that wrote it",
                        prefix = self.keys.prefix(),
                    )
                };
                Ok(LayoutCheck::Refused { found, advice })
            }
            _ => Err(unexpected(what, &status, &items)),
        }
    }

    /// Migrates layout-1 data to this layout in bounded steps (one SCAN of the deployment's
    /// keys each) and marks it; returns (manifest keys deleted, receipt claims moved onto
    /// their passport records). Idempotent: on a layout-2 deployment it changes nothing and
    /// marks it again. Every replica of the previous
    /// version must be stopped first (it would write manifest members again).
    pub async fn migrate_layout(&self) -> Result<(u64, u64), StoreError> {
        let what = "layout migrate";
        let mut cursor = "0".to_string();
        let (mut deleted, mut moved) = (0u64, 0u64);
        loop {
            let mut invocation = self.scripts.layout.key(self.keys.layout());
            invocation
                .key(self.keys.days_due())
                .arg("migrate")
                .arg(self.keys.prefix())
                .arg(cursor.as_str())
                .arg(MIGRATE_SCAN_COUNT);
            let (status, items) = status_reply(what, self.conn.script(what, &invocation).await?)?;
            match status.as_str() {
                "NEXT" => {
                    cursor = text(what, at(what, &items, 0)?)?;
                    deleted += u64::from(uint(what, at(what, &items, 1)?)?);
                    moved += u64::from(uint(what, at(what, &items, 2)?)?);
                }
                "DONE" => {
                    deleted += u64::from(uint(what, at(what, &items, 0)?)?);
                    moved += u64::from(uint(what, at(what, &items, 1)?)?);
                    return Ok((deleted, moved));
                }
                "LAYOUT" => {
                    let found = text(what, at(what, &items, 0)?)?;
                    return Err(StoreError::Corrupt {
                        detail: format!(
                            "Redis marks {} as key layout {found}, which this slotd (layout \
                             {LAYOUT}) cannot migrate",
                            self.keys.prefix()
                        ),
                    });
                }
                _ => return Err(unexpected(what, &status, &items)),
            }
        }
    }
}
