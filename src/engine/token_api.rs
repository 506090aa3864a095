//! The token routes: an account lists, creates and revokes its own tokens; an
//! admin revokes anyone's (`hoodyd token revoke` on a running daemon).

use hoody_api::model::{CreateToken, NewToken, Principal, Token};

use super::{Engine, EngineError};

impl Engine {
    pub(super) async fn list_account_tokens(&self, who: &Principal) -> Result<Vec<Token>, EngineError> {
        let now = time::OffsetDateTime::now_utc();
        let mut tokens: Vec<_> = self.catalog.tokens().await?.into_iter().filter(|t| t.account_id == who.account_id).collect();
        tokens.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(tokens.iter().map(|t| crate::tokens::listed(t, now)).collect())
    }

    pub(super) async fn create_account_token(&self, who: &Principal, req: CreateToken) -> Result<NewToken, EngineError> {
        let lifetime = match req.expires_in.as_deref() {
            Some(text) => Some(crate::tokens::parse_lifetime(text).map_err(|e| EngineError::invalid("expires_in", e))?),
            None => None,
        };
        let account = self.catalog.account(&who.account_id).await?.ok_or_else(|| EngineError::Unauthenticated("the token's account is gone".into()))?;
        let (record, token) = crate::tokens::issue_expiring(&self.catalog, &account, lifetime).await?;
        Ok(NewToken { token, id: record.id, account_id: record.account_id, created_at: record.created_at, expires_at: record.expires_at })
    }

    /// Revokes token `id` if `who` may: its own, or any when `any_account` (admin).
    pub(super) async fn revoke_some_token(&self, who: &Principal, id: &str, any_account: bool) -> Result<(), EngineError> {
        if any_account && !who.is_admin {
            return Err(EngineError::Forbidden("revoking another account's token needs an admin token".into()));
        }
        let unknown = || EngineError::not_found(format!("no token {id}"));
        let record = self.catalog.token(id).await?.ok_or_else(unknown)?;
        if !any_account && record.account_id != who.account_id {
            return Err(unknown());
        }
        if crate::tokens::admin_token_id(&self.layout).as_deref() == Some(id) {
            return Err(EngineError::Conflict("this is the data dir's admin.token, which `hoodyd` verbs use to reach the daemon; it cannot be revoked".into()));
        }
        if !self.tokens.revoke(&self.catalog, id).await? {
            return Err(unknown());
        }
        Ok(())
    }
}
