//! The gRPC service: decodes requests, resolves the tenant, calls the store, encodes responses.
//! Errors leave as `tonic::Status` through the table in `proto::error`.

use std::sync::Arc;

use bytes::Bytes;
use proto::DomainError;
use proto::directory::v1::directory_server::Directory;
use proto::directory::v1::{
    AuthenticateRequest, AuthenticateResponse, CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse,
    PatchUserRequest, ReplaceUserRequest, User,
};
use proto::events::v1::Source;
use scim::{Page, PatchRequest, UserDocument};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{Store, StoredUser, Tenant};

/// The Directory service.
pub struct DirectoryService {
    store: Store,
}

impl DirectoryService {
    pub fn new(store: Store) -> Self {
        DirectoryService { store }
    }

    async fn tenant(&self, id: &str) -> Result<Arc<Tenant>, DomainError> {
        let id =
            Uuid::parse_str(id).map_err(|_| DomainError::new(proto::ErrorKind::Unauthenticated, "Unknown tenant."))?;
        self.store.tenant(id).await
    }
}

fn to_proto(user: &StoredUser) -> Result<User, DomainError> {
    let document = serde_json::to_vec(user.document.as_map()).map_err(|_| DomainError::internal())?;
    Ok(User {
        id: user.id.to_string(),
        version: user.version,
        created: Some(proto::time::to_timestamp(user.created)),
        last_modified: Some(proto::time::to_timestamp(user.last_modified)),
        source: user.source as i32,
        document: Bytes::from(document),
    })
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, DomainError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DomainError::from(scim::Error::invalid_syntax(format!("The request body is not valid JSON: {e}.")))
    })
}

fn respond(user: Result<StoredUser, DomainError>) -> Result<Response<User>, Status> {
    user.and_then(|u| to_proto(&u)).map(Response::new).map_err(|e| e.to_status())
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let tenant =
            self.store.authenticate(&req.api_key, req.subdomain.as_deref()).await.map_err(|e| e.to_status())?;
        Ok(Response::new(AuthenticateResponse { tenant_id: tenant.id.to_string(), subdomain: tenant.subdomain }))
    }

    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let mut doc = UserDocument::from_request(parse_json(&req.document)?)?;
            doc.validate_new()?;
            let source = Source::try_from(req.source).unwrap_or(Source::Scim);
            self.store.create_user(&tenant, doc, source).await
        }
        .await;
        respond(result)
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            self.store.get_user(&tenant, &req.id).await
        }
        .await;
        respond(result)
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let filter = match req.filter.trim() {
                "" => None,
                f => Some(scim::filter::parse(f)?),
            };
            let page = Page { start_index: req.start_index.max(1), count: req.count.min(scim::MAX_PAGE_SIZE) };
            let (total, users) = self.store.list_users(&tenant, filter.as_ref(), page).await?;
            Ok::<_, DomainError>(ListUsersResponse {
                total_results: total,
                users: users.iter().map(to_proto).collect::<Result<_, _>>()?,
            })
        }
        .await;
        result.map(Response::new).map_err(|e| e.to_status())
    }

    async fn replace_user(&self, request: Request<ReplaceUserRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let doc = UserDocument::from_request(parse_json(&req.document)?)?;
            self.store.replace_user(&tenant, &req.id, doc, req.if_match_version).await
        }
        .await;
        respond(result)
    }

    async fn patch_user(&self, request: Request<PatchUserRequest>) -> Result<Response<User>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let patch = PatchRequest::parse(&parse_json(&req.patch)?)?;
            self.store.patch_user(&tenant, &req.id, &patch, req.if_match_version).await
        }
        .await;
        respond(result)
    }
}
