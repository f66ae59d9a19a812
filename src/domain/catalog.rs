//! The posts catalog: which posts exist, their categories, names, addresses and time zones.
//! Read once at start from a TOML file (`deploy/posts.toml` is compiled in as the default).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::error::Error;
use super::types::{CategoryId, DayRef, PostId, SlotRef};

pub const DEFAULT_CATALOG: &str = include_str!("../../deploy/posts.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PostKind {
    Embassy,
    Consulate,
    DocumentDropOff,
}

#[derive(Debug, Clone)]
pub struct Category {
    pub id: CategoryId,
    pub name_en: String,
    pub name_zh: String,
}

#[derive(Debug, Clone)]
pub struct Post {
    pub id: PostId,
    pub kind: PostKind,
    pub name_en: String,
    pub name_zh: String,
    pub address_en: String,
    pub address_zh: String,
    pub city: String,
    pub postal_code: String,
    pub time_zone: Tz,
    pub categories: Vec<Category>,
    /// Lines the confirmation letter prints for reaching the post (phone, e-mail, hours);
    /// optional, at most `MAX_CONTACT_LINES` of at most `MAX_CONTACT_LINE_CHARS` characters.
    pub contact: Vec<String>,
}

/// At most this many contact lines per post.
pub const MAX_CONTACT_LINES: usize = 8;
/// At most this many characters in one contact line.
pub const MAX_CONTACT_LINE_CHARS: usize = 200;

#[derive(Debug, Clone)]
pub struct Catalog {
    posts: Vec<Post>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    posts: Vec<RawPost>,
    categories: BTreeMap<String, RawCategory>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPost {
    post_id: String,
    kind: PostKind,
    name_en: String,
    name_zh: String,
    address_en: String,
    address_zh: String,
    city: String,
    postal_code: String,
    time_zone: String,
    categories: Vec<String>,
    #[serde(default)]
    contact: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    name_en: String,
    name_zh: String,
}

/// Why a catalog file was refused, naming the entry.
#[derive(Debug, thiserror::Error)]
#[error("posts catalog: {0}")]
pub struct CatalogError(String);

impl Catalog {
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::from_toml(DEFAULT_CATALOG)
    }

    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| CatalogError(e.to_string()))?;
        let mut posts: Vec<Post> = Vec::with_capacity(raw.posts.len());
        for p in raw.posts {
            let id = PostId::parse(&p.post_id)
                .map_err(|v| CatalogError(format!("post_id {:?}: {}", p.post_id, v.description)))?;
            if id.as_str() != p.post_id {
                return Err(CatalogError(format!(
                    "post_id {:?} must be upper case",
                    p.post_id
                )));
            }
            if posts.iter().any(|q| q.id == id) {
                return Err(CatalogError(format!("post_id {id} appears twice")));
            }
            let time_zone: Tz = p.time_zone.parse().map_err(|_| {
                CatalogError(format!("post {id}: unknown time_zone {:?}", p.time_zone))
            })?;
            if p.categories.is_empty() {
                return Err(CatalogError(format!(
                    "post {id}: categories must not be empty"
                )));
            }
            let mut categories = Vec::with_capacity(p.categories.len());
            for c in &p.categories {
                let names = raw.categories.get(c).ok_or_else(|| {
                    CatalogError(format!(
                        "post {id}: category {c} has no [categories.{c}] entry"
                    ))
                })?;
                let cid = CategoryId::parse(c)
                    .ok()
                    .filter(|cid| cid.as_str() == c)
                    .ok_or_else(|| {
                        CatalogError(format!(
                            "post {id}: category {c:?} must be 1-32 of A-Z, 0-9, _"
                        ))
                    })?;
                categories.push(Category {
                    id: cid,
                    name_en: names.name_en.clone(),
                    name_zh: names.name_zh.clone(),
                });
            }
            if p.contact.len() > MAX_CONTACT_LINES {
                return Err(CatalogError(format!(
                    "post {id}: at most {MAX_CONTACT_LINES} contact lines"
                )));
            }
            for line in &p.contact {
                let chars = line.chars().count();
                if chars == 0
                    || chars > MAX_CONTACT_LINE_CHARS
                    || line.chars().any(char::is_control)
                {
                    return Err(CatalogError(format!(
                        "post {id}: each contact line must be 1-{MAX_CONTACT_LINE_CHARS} characters without control characters"
                    )));
                }
            }
            posts.push(Post {
                id,
                kind: p.kind,
                name_en: p.name_en,
                name_zh: p.name_zh,
                address_en: p.address_en,
                address_zh: p.address_zh,
                city: p.city,
                postal_code: p.postal_code,
                time_zone,
                categories,
                contact: p.contact,
            });
        }
        if posts.is_empty() {
            return Err(CatalogError("no posts".into()));
        }
        Ok(Self { posts })
    }

    pub fn posts(&self) -> &[Post] {
        &self.posts
    }

    pub fn post(&self, id: &PostId) -> Result<&Post, Error> {
        self.posts
            .iter()
            .find(|p| &p.id == id)
            .ok_or_else(|| Error::PostNotFound {
                post_id: id.to_string(),
            })
    }

    /// The post, after checking it offers the category.
    pub fn post_with_category(&self, post: &PostId, category: &CategoryId) -> Result<&Post, Error> {
        let p = self.post(post)?;
        if p.categories.iter().any(|c| &c.id == category) {
            Ok(p)
        } else {
            Err(Error::CategoryNotFound {
                post_id: post.to_string(),
                category: category.to_string(),
            })
        }
    }

    pub fn check_day(&self, day: &DayRef) -> Result<&Post, Error> {
        self.post_with_category(&day.post, &day.category)
    }

    /// When the slot starts, as an instant.
    pub fn slot_start(&self, slot: &SlotRef) -> Result<DateTime<Utc>, Error> {
        let post = self.post_with_category(&slot.post, &slot.category)?;
        Ok(post.slot_start(slot))
    }
}

impl Post {
    /// Today's date at the post.
    pub fn today(&self, now: DateTime<Utc>) -> NaiveDate {
        now.with_timezone(&self.time_zone).date_naive()
    }

    /// The instant the slot starts in the post's time zone. A local time that a DST change skips
    /// counts from the moment after the gap; an ambiguous one from its earlier occurrence.
    pub fn slot_start(&self, slot: &SlotRef) -> DateTime<Utc> {
        let minutes = u32::from(slot.time.minutes());
        let local = slot
            .date
            .and_hms_opt(minutes / 60, minutes % 60, 0)
            .unwrap_or_default();
        match self.time_zone.from_local_datetime(&local) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
                t.with_timezone(&Utc)
            }
            chrono::LocalResult::None => {
                let later = local + chrono::Duration::hours(1);
                self.time_zone
                    .from_local_datetime(&later)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| local.and_utc())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::SlotTime;

    #[test]
    fn builtin_catalog_has_the_five_posts_and_five_citic_sites() {
        let catalog = Catalog::builtin().expect("builtin catalog parses");
        let ids: Vec<&str> = catalog.posts().iter().map(|p| p.id.as_str()).collect();
        for id in ["BEIJING", "SHANGHAI", "GUANGZHOU", "SHENYANG", "WUHAN"] {
            assert!(ids.contains(&id), "{id} missing");
        }
        let citic = catalog
            .posts()
            .iter()
            .filter(|p| p.kind == PostKind::DocumentDropOff)
            .count();
        assert_eq!(citic, 5);
        let beijing = catalog.post(&PostId::parse("BEIJING").unwrap()).unwrap();
        assert_eq!(beijing.address_zh, "北京市朝阳区安家楼路55号");
        assert_eq!(beijing.postal_code, "100600");
    }

    #[test]
    fn slot_start_is_in_the_post_time_zone() {
        let catalog = Catalog::builtin().unwrap();
        let slot = SlotRef {
            post: PostId::parse("BEIJING").unwrap(),
            category: CategoryId::parse("ALL_OTHERS").unwrap(),
            date: NaiveDate::from_ymd_opt(2025, 1, 27).unwrap(),
            time: SlotTime::parse("08:15").unwrap(),
        };
        let start = catalog.slot_start(&slot).unwrap();
        assert_eq!(
            crate::domain::types::format_instant(start),
            "2025-01-27T00:15:00Z"
        );
    }

    #[test]
    fn unknown_category_and_post_are_refused() {
        let catalog = Catalog::builtin().unwrap();
        let post = PostId::parse("BEIJING").unwrap();
        let cat = CategoryId::parse("INTERVIEW_WAIVER").unwrap();
        assert!(matches!(
            catalog.post_with_category(&post, &cat),
            Err(Error::CategoryNotFound { .. })
        ));
        assert!(matches!(
            catalog.post(&PostId::parse("LHASA").unwrap()),
            Err(Error::PostNotFound { .. })
        ));
    }

    #[test]
    fn a_catalog_with_an_undefined_category_is_refused() {
        let text = DEFAULT_CATALOG.replace("[categories.STUDENT]", "[categories.STUDENTS]");
        assert!(Catalog::from_toml(&text).is_err());
    }

    #[test]
    fn contact_lines_are_optional_and_bounded() {
        let builtin = Catalog::builtin().unwrap();
        assert!(builtin.posts().iter().all(|p| !p.contact.is_empty()));
        let without = DEFAULT_CATALOG
            .lines()
            .filter(|l| !l.starts_with("contact"))
            .collect::<Vec<_>>()
            .join("\n");
        let catalog = Catalog::from_toml(&without).unwrap();
        assert!(catalog.posts().iter().all(|p| p.contact.is_empty()));
        for bad in [
            "[\"\"]",
            "[\"a\\u0007b\"]",
            &format!("[\"{}\"]", "x".repeat(201)),
        ] {
            let text =
                DEFAULT_CATALOG.replacen("contact = [", &format!("contact = {bad}\nold = ["), 1);
            let text = text.replacen("old = [", "#", 1);
            let e = Catalog::from_toml(&text).expect_err(bad).to_string();
            assert!(e.contains("contact"), "{bad}: {e}");
        }
    }
}
