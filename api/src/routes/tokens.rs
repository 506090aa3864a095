use axum::extract::{Path, State};
use axum::Extension;

use super::AppState;
use crate::model::{CreateToken, NewToken, NoQuery, PageQuery, Principal, Token};
use crate::{ApiError, ListReply, Reply, StrictJson, StrictQuery};

/// List the caller's tokens: ids and expiry, never secrets.
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, description = "Tokens", body = [Token])))]
pub(super) async fn list_tokens(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(q): StrictQuery<PageQuery>) -> Result<ListReply<Token>, ApiError> {
    let page = q.page()?;
    Ok(ListReply::page("tokens", s.service.list_tokens(&who).await?, page))
}

/// Create a token for the caller's account, optionally expiring; the secret is shown this once.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, description = "Created", body = NewToken), (status = 400, description = "Bad input")))]
pub(super) async fn create_token(State(s): State<AppState>, Extension(who): Extension<Principal>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>, StrictJson(req): StrictJson<CreateToken>) -> Result<Reply<NewToken>, ApiError> {
    Ok(Reply::created("token created", s.service.create_token(&who, req).await?))
}

/// Revoke one of the caller's tokens; it is refused from the next request on.
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked"), (status = 404, description = "Unknown"), (status = 409, description = "The data dir's admin.token")))]
pub(super) async fn revoke_token(State(s): State<AppState>, Extension(who): Extension<Principal>, Path(id): Path<String>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> Result<Reply<()>, ApiError> {
    s.service.revoke_token(&who, &id).await?;
    Ok(Reply::ok("token revoked", ()))
}

/// Revoke any account's token (admin token only); what `hoodyd token revoke` calls.
#[utoipa::path(delete, path = "/admin/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked"), (status = 403, description = "Not an admin"), (status = 404, description = "Unknown"), (status = 409, description = "The data dir's admin.token")))]
pub(super) async fn admin_revoke_token(State(s): State<AppState>, Extension(who): Extension<Principal>, Path(id): Path<String>, StrictQuery(NoQuery {}): StrictQuery<NoQuery>) -> Result<Reply<()>, ApiError> {
    s.service.admin_revoke_token(&who, &id).await?;
    Ok(Reply::ok("token revoked", ()))
}
