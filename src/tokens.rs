//! Bearer tokens: `hoody_<id>_<secret>`. The catalog keeps only a BLAKE3 hash of
//! the secret under the token's id; checking a token is one lookup by id and a
//! constant-time comparison of hashes.

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::catalog::{AccountRecord, Catalog, CatalogResult, TokenRecord};

const PREFIX: &str = "hoody_";

fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Issues a new token for `account`, returning the plaintext (shown once).
pub async fn issue(catalog: &Catalog, account: &AccountRecord) -> CatalogResult<String> {
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let id = crate::ids::new_id();
    catalog
        .put_token(&TokenRecord { id: id.clone(), account_id: account.id.clone(), secret_hash: hash_secret(&secret), created_at: crate::ids::now() })
        .await?;
    Ok(format!("{PREFIX}{id}_{secret}"))
}

/// `(id, secret)` of a well-formed token.
fn parse(token: &str) -> Option<(&str, &str)> {
    token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_'))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret).as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// The token's record and account, or `None` for anything that is not a valid token.
async fn lookup(catalog: &Catalog, token: &str) -> CatalogResult<Option<(TokenRecord, AccountRecord)>> {
    let Some((id, secret)) = parse(token) else { return Ok(None) };
    let Some(record) = catalog.token(id).await? else { return Ok(None) };
    if !secret_matches(secret, &record.secret_hash) {
        return Ok(None);
    }
    Ok(catalog.account(&record.account_id).await?.map(|account| (record, account)))
}

/// Checks tokens, remembering those already seen (tokens never change once
/// issued), so a request costs no catalog read for authentication.
#[derive(Default)]
pub struct TokenCache {
    seen: std::sync::RwLock<std::collections::HashMap<String, (String, AccountRecord)>>,
}

impl TokenCache {
    /// The account a token belongs to, or `None` for anything that is not a valid token.
    pub async fn verify(&self, catalog: &Catalog, token: &str) -> CatalogResult<Option<AccountRecord>> {
        let Some((id, secret)) = parse(token) else { return Ok(None) };
        let cached = self.seen.read().expect("token cache").get(id).cloned();
        if let Some((hash, account)) = cached {
            return Ok(secret_matches(secret, &hash).then_some(account));
        }
        let Some((record, account)) = lookup(catalog, token).await? else { return Ok(None) };
        self.seen.write().expect("token cache").insert(id.to_string(), (record.secret_hash, account.clone()));
        Ok(Some(account))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::catalog::sqlite::SqliteKv;

    #[tokio::test]
    async fn issued_tokens_verify_and_forgeries_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(Arc::new(SqliteKv::open(&dir.path().join("c.db")).unwrap())).await.unwrap();
        let alice = catalog.ensure_account("alice", false).await.unwrap();
        let token = issue(&catalog, &alice).await.unwrap();
        assert_eq!(TokenCache::default().verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert!(TokenCache::default().verify(&catalog, &forged).await.unwrap().is_none());
        assert!(TokenCache::default().verify(&catalog, "hoody_nope").await.unwrap().is_none());
        assert!(TokenCache::default().verify(&catalog, "").await.unwrap().is_none());
        let cache = TokenCache::default();
        for _ in 0..2 {
            assert_eq!(cache.verify(&catalog, &token).await.unwrap().unwrap().id, alice.id);
            assert!(cache.verify(&catalog, &forged).await.unwrap().is_none(), "a cached id does not admit a wrong secret");
        }
        let stored = catalog.kv().range(b"tokens/").await.unwrap();
        assert!(!String::from_utf8_lossy(&stored[0].1).contains(token.rsplit('_').next().unwrap()), "secret stored in clear");
    }
}
