//! Identifiers, names and timestamps as the API shows them.

use rand::RngCore;

use crate::engine::EngineError;

/// The longest alias, in bytes: well under `NAME_MAX` (255), so an alias is
/// always a valid file name (a share's mount point) and URL segment.
pub const MAX_ALIAS_BYTES: usize = 100;

/// The one alias rule, for snapshots (`/containers/{id}/snapshots/{alias}`)
/// and shares (`/hoody/shares/<alias>` in a target) alike: a single path
/// component name, i.e. a valid name (`containers::validate_name`: not empty,
/// no control character, no surrounding space), not `.` or `..`, without `/`,
/// at most [`MAX_ALIAS_BYTES`] bytes.
pub fn validate_alias(alias: &str) -> Result<(), EngineError> {
    crate::containers::validate_name("alias", alias)?;
    if alias.contains('/') || alias == "." || alias == ".." || alias.len() > MAX_ALIAS_BYTES {
        return Err(EngineError::invalid(
            "alias",
            format!("`alias` must be a single path component of at most {MAX_ALIAS_BYTES} bytes without `/`, got `{alias}`"),
        ));
    }
    Ok(())
}

/// A new random object id: 24 lowercase hex digits (96 bits).
pub fn new_id() -> String {
    let mut bytes = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The current time, RFC 3339 in UTC with milliseconds (`2025-11-09T15:00:00.000Z`).
pub fn now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// The current time in Unix seconds, as the catalog records it (`expires_at`).
pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn format_time(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(&f).expect("UTC times always format")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_unique_hex_and_times_are_rfc3339() {
        let (a, b) = (super::new_id(), super::new_id());
        assert_ne!(a, b);
        assert!(a.len() == 24 && a.chars().all(|c| c.is_ascii_hexdigit()));
        let t = super::now();
        assert!(time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).is_ok(), "{t}");
    }

    #[test]
    fn an_alias_is_one_short_path_component() {
        use super::{validate_alias, MAX_ALIAS_BYTES};
        for ok in ["a", "snap-2025", "my share", &"x".repeat(MAX_ALIAS_BYTES)] {
            assert!(validate_alias(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".", "..", "a/b", "/", "a\0b", "a\nb", " a", "a ", &"x".repeat(MAX_ALIAS_BYTES + 1)] {
            assert!(validate_alias(bad).is_err(), "{bad:?}");
        }
    }
}
