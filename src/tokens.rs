//! Bearer tokens: `hoody_<id>_<secret>`. The catalog keeps only a BLAKE3 hash of
//! the secret under the token's id; checking a token is one lookup by id and a
//! constant-time comparison of hashes.
//!
//! A token may carry an expiry (`expires_at`) and may be revoked (its record is
//! deleted). Both take effect on the next request of a running daemon; see
//! [`TokenCache`] for how without a catalog read per request.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use rand::RngCore;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::catalog::kv::{Watch, WatchItem};
use crate::catalog::{AccountRecord, Catalog, CatalogResult, TokenRecord};

const PREFIX: &str = "hoody_";

/// The longest lifetime `--expires-in` / `expires_in` accept (100 years).
const MAX_LIFETIME: Duration = Duration::from_secs(36_500 * 86_400);

pub(crate) fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Parses a lifetime such as `30d`, `12h`, `90m` or `45s` (a positive whole
/// number and one unit: s, m, h, d).
pub fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a lifetime: a positive whole number and a unit s, m, h or d, e.g. 30d");
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3_600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit).ok_or_else(bad)?;
    if secs == 0 {
        return Err(bad());
    }
    let lifetime = Duration::from_secs(secs);
    if lifetime > MAX_LIFETIME {
        return Err(format!("`{text}` is longer than the longest lifetime, 36500d"));
    }
    Ok(lifetime)
}

/// Issues a new token for `account` that never expires, returning the plaintext (shown once).
pub async fn issue(catalog: &Catalog, account: &AccountRecord) -> CatalogResult<String> {
    Ok(issue_expiring(catalog, account, None).await?.1)
}

/// Issues a new token for `account`, refused from `lifetime` on when given;
/// returns its record and the plaintext (shown once).
pub async fn issue_expiring(catalog: &Catalog, account: &AccountRecord, lifetime: Option<Duration>) -> CatalogResult<(TokenRecord, String)> {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let record = TokenRecord {
        id: crate::ids::new_id(),
        account_id: account.id.clone(),
        secret_hash: hash_secret(&secret),
        created_at: crate::ids::now(),
        expires_at: lifetime.map(|l| crate::ids::format_time(OffsetDateTime::now_utc() + l.min(MAX_LIFETIME))),
        record_version: crate::catalog::RECORD_VERSION,
    };
    catalog.put_token(&record).await?;
    let token = format!("{PREFIX}{}_{secret}", record.id);
    Ok((record, token))
}

/// The id of a well-formed token (public: ids are what lists show and revoke takes).
pub fn id_of(token: &str) -> Option<&str> {
    parse(token).map(|(id, _)| id)
}

/// `(id, secret)` of a well-formed token.
fn parse(token: &str) -> Option<(&str, &str)> {
    token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_'))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub(crate) fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// When the record stops being valid (`None`: never); an unreadable time
/// counts as already expired (fail closed).
fn expiry_of(record: &TokenRecord) -> Option<OffsetDateTime> {
    record.expires_at.as_deref().map(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap_or(OffsetDateTime::UNIX_EPOCH))
}

/// Whether the record has expired at `now`.
pub fn is_expired(record: &TokenRecord, now: OffsetDateTime) -> bool {
    expiry_of(record).is_some_and(|e| now >= e)
}

/// What a list shows of a record: never the secret (nor its hash).
pub fn listed(t: &TokenRecord, now: time::OffsetDateTime) -> hoody_api::model::Token {
    hoody_api::model::Token { id: t.id.clone(), account_id: t.account_id.clone(), created_at: t.created_at.clone(), expires_at: t.expires_at.clone(), expired: is_expired(t, now) }
}

/// The id of the token in the data dir's `admin.token`, if readable.
pub fn admin_token_id(layout: &crate::layout::DataLayout) -> Option<String> {
    let text = std::fs::read_to_string(layout.admin_token()).ok()?;
    crate::tokens::id_of(text.trim()).map(str::to_string)
}

/// A verified token as remembered: enough to check the secret and the expiry
/// again without the catalog.
#[derive(Clone)]
struct Verified {
    secret_hash: String,
    account: AccountRecord,
    expires: Option<OffsetDateTime>,
}

#[derive(Default)]
struct Seen {
    by_id: HashMap<String, Verified>,
    /// Bumped by every forgetting, so that a lookup that read the catalog
    /// before a revocation does not put the revoked token back afterwards.
    generation: u64,
}

/// Checks tokens, remembering those already verified, so a request costs no
/// catalog read for authentication. Expiry and revocation still hold at once:
///
/// * Expiry: the remembered entry keeps `expires_at`, compared with the clock
///   on every check, cached or not.
/// * Revocation deletes the token's record. Every check first drains (without
///   waiting, a `try_recv`) a catalog watch on `tokens/` and forgets the ids it
///   names; the SQLite store publishes a change before its write returns, so a
///   revocation made by this process is seen by the very next check, whichever
///   code path made it (and with a shared backend such as etcd, anyone's). A
///   watcher that fell behind forgets everything.
/// * A revocation from another process (`hoodyd token revoke` while the daemon
///   runs) would not reach this process's watch, so that verb goes through the
///   running daemon's HTTP API, and writes the catalog itself only when it holds
///   the data dir's lock (no daemon runs, none can start meanwhile); see
///   `daemon::revoke_token`.
///
/// Rejected alternatives: a catalog read per request (what the cache exists to
/// avoid), or SQLite's `PRAGMA data_version` per request, which costs a
/// blocking call on a dedicated connection each time and changes on every
/// write of any connection, the daemon's own frequent progress writes
/// included, so the cache would be flushed constantly; it also ties this
/// module to one backend.
pub struct TokenCache {
    seen: RwLock<Seen>,
    changes: Mutex<Watch>,
}

impl TokenCache {
    pub fn new(catalog: &Catalog) -> Self {
        TokenCache { seen: Default::default(), changes: Mutex::new(catalog.kv().watch(b"tokens/", None)) }
    }

    /// The account a token belongs to, or `None` for anything that is not a
    /// valid, unexpired, unrevoked token.
    pub async fn verify(&self, catalog: &Catalog, token: &str) -> CatalogResult<Option<AccountRecord>> {
        let Some((id, secret)) = parse(token) else { return Ok(None) };
        self.apply_changes();
        let (cached, generation) = {
            let seen = self.seen.read().expect("token cache");
            (seen.by_id.get(id).cloned(), seen.generation)
        };
        let now = OffsetDateTime::now_utc();
        if let Some(v) = cached {
            let live = v.expires.is_none_or(|e| now < e);
            return Ok((live && secret_matches(secret, &v.secret_hash)).then_some(v.account));
        }
        let Some(record) = catalog.token(id).await? else { return Ok(None) };
        if !secret_matches(secret, &record.secret_hash) || is_expired(&record, now) {
            return Ok(None);
        }
        let Some(account) = catalog.account(&record.account_id).await? else { return Ok(None) };
        let mut seen = self.seen.write().expect("token cache");
        if seen.generation == generation {
            let expires = expiry_of(&record);
            seen.by_id.insert(id.to_string(), Verified { secret_hash: record.secret_hash, account: account.clone(), expires });
        }
        Ok(Some(account))
    }

    /// Forgets `id` (it was revoked or changed).
    pub fn forget(&self, id: &str) {
        let mut seen = self.seen.write().expect("token cache");
        seen.by_id.remove(id);
        seen.generation += 1;
    }

    /// Forgets the tokens changed since the last check.
    fn apply_changes(&self) {
        let mut changes = self.changes.lock().expect("token watch");
        while let Some(change) = changes.try_next() {
            match change {
                WatchItem::Event(ev) => {
                    let key = String::from_utf8_lossy(&ev.key);
                    self.forget(key.strip_prefix("tokens/").unwrap_or(&key));
                }
                WatchItem::Resync => {
                    let mut seen = self.seen.write().expect("token cache");
                    seen.by_id.clear();
                    seen.generation += 1;
                }
            }
        }
    }

    /// Revokes token `id` (deletes its record); whether it existed. The delete
    /// runs as its own task, so a caller that goes away midway (a dropped HTTP
    /// request) cannot leave the record deleted but the change unpublished.
    pub async fn revoke(&self, catalog: &Catalog, id: &str) -> CatalogResult<bool> {
        let (catalog, owned) = (catalog.clone(), id.to_string());
        let existed = tokio::spawn(async move { catalog.delete_token(&owned).await })
            .await
            .map_err(|e| crate::catalog::CatalogError::Kv(crate::catalog::KvError::Storage(e.to_string())))??;
        self.forget(id);
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::sqlite::SqliteKv;

    async fn catalog(dir: &tempfile::TempDir) -> Catalog {
        Catalog::open(Arc::new(SqliteKv::open(&dir.path().join("c.db")).unwrap())).await.unwrap()
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(&dir).await;
        let alice = catalog.ensure_account("alice", false).await.unwrap();
        let token = issue(&catalog, &alice).await.unwrap();
        assert_eq!(TokenCache::new(&catalog).verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(TokenCache::new(&catalog).verify(&catalog, &forged).await.unwrap().is_none());
        assert!(TokenCache::new(&catalog).verify(&catalog, "hoody_nope").await.unwrap().is_none());
        assert!(TokenCache::new(&catalog).verify(&catalog, "").await.unwrap().is_none());
        let cache = TokenCache::new(&catalog);
        for _ in 0..2 {
            assert_eq!(cache.verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
            assert!(cache.verify(&catalog, &forged).await.unwrap().is_none(), "a cached id does not admit a wrong secret");
        }
        let stored = catalog.kv().range(b"tokens/").await.unwrap();
        assert!(!String::from_utf8_lossy(&stored.items[0].1.value).contains(token.rsplit('_').next().unwrap()), "secret stored in clear");
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(&dir).await;
        let alice = catalog.ensure_account("alice", false).await.unwrap();
        let (record, token) = issue_expiring(&catalog, &alice, Some(Duration::from_millis(600))).await.unwrap();
        assert!(record.expires_at.is_some());
        let cache = TokenCache::new(&catalog);
        assert_eq!(cache.verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
        assert!(cache.seen.read().unwrap().by_id.contains_key(&record.id), "cached");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(cache.seen.read().unwrap().by_id.contains_key(&record.id), "still cached");
        assert!(cache.verify(&catalog, &token).await.unwrap().is_none(), "expired but cached");
        assert!(TokenCache::new(&catalog).verify(&catalog, &token).await.unwrap().is_none(), "expired, read from the catalog");
    }

    #[tokio::test]
    async fn a_revoked_token_is_refused_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(&dir).await;
        let alice = catalog.ensure_account("alice", false).await.unwrap();
        let (a, token_a) = issue_expiring(&catalog, &alice, None).await.unwrap();
        let (b, token_b) = issue_expiring(&catalog, &alice, None).await.unwrap();
        let cache = TokenCache::new(&catalog);
        for token in [&token_a, &token_b] {
            assert!(cache.verify(&catalog, token).await.unwrap().is_some());
        }
        // Through the cache's own revoke.
        assert!(cache.revoke(&catalog, &a.id).await.unwrap());
        assert!(cache.verify(&catalog, &token_a).await.unwrap().is_none(), "revoked but was cached");
        assert!(!cache.revoke(&catalog, &a.id).await.unwrap(), "already gone");
        // Deleted by any other code path of the process: the watch tells the cache.
        assert!(cache.verify(&catalog, &token_b).await.unwrap().is_some());
        assert!(cache.seen.read().unwrap().by_id.contains_key(&b.id), "cached");
        assert!(catalog.delete_token(&b.id).await.unwrap());
        assert!(cache.verify(&catalog, &token_b).await.unwrap().is_none(), "deleted but was cached");
    }

    #[tokio::test]
    async fn records_without_expiry_still_decode_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = catalog(&dir).await;
        let alice = catalog.ensure_account("alice", false).await.unwrap();
        let secret = "ab".repeat(32);
        let old = serde_json::json!({"id": "0123456789abcdef01234567", "account_id": alice.id, "secret_hash": hash_secret(&secret), "created_at": "2025-01-01T00:00:00.000Z"});
        catalog.kv().put(b"tokens/0123456789abcdef01234567", &serde_json::to_vec(&old).unwrap()).await.unwrap();
        let record = catalog.token("0123456789abcdef01234567").await.unwrap().unwrap();
        assert_eq!(record.expires_at, None);
        let token = format!("hoody_0123456789abcdef01234567_{secret}");
        assert_eq!(TokenCache::new(&catalog).verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
    }

    #[test]
    fn lifetimes_take_s_m_h_d() {
        assert_eq!(parse_lifetime("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_lifetime("90m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_lifetime("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_lifetime("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in ["", "d", "0s", "-1d", "1.5d", "10", "3w", "1 d", "99999999999999999999d", "36501d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
