//! Pure domain types and rules of slotd. Nothing here performs I/O or names tonic or Redis types:
//! `api` converts wire messages into these types, `store` persists them.

/// A credential-grade id: 32 lower-case hex digits = 128 bits from the CSPRNG, parsed
/// case-insensitively (surrounding blanks ignored); `$field` names it in violations.
macro_rules! random_hex_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub const LEN: usize = 32;

            pub fn generate() -> Self {
                use rand::Rng;
                let bytes: [u8; 16] = rand::rng().random();
                Self(hex::encode(bytes))
            }

            pub fn parse(text: &str) -> Result<Self, $crate::domain::FieldViolation> {
                let lower = text.trim().to_ascii_lowercase();
                if lower.is_empty() {
                    return Err($crate::domain::FieldViolation::new(
                        "",
                        concat!($field, " is required"),
                    ));
                }
                if lower.len() != Self::LEN || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err($crate::domain::FieldViolation::new(
                        "",
                        format!(concat!($field, " must be {} hexadecimal digits"), Self::LEN),
                    ));
                }
                Ok(Self(lower))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub mod admission;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod lifecycle;
pub mod room;
pub mod rules;
pub mod types;
pub mod waitlist;

pub use error::{Error, FieldViolation, Violations};
