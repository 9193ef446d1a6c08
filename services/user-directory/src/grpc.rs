//! The gRPC service: decodes requests, resolves the tenant, dispatches on the resource type to
//! the store, encodes responses. Errors leave as `tonic::Status` through the table in
//! `proto::error`.

use std::sync::Arc;

use bytes::Bytes;
use proto::DomainError;
use proto::directory::v1::directory_server::Directory;
use proto::directory::v1::{
    Assignment, AuthenticateRequest, AuthenticateResponse, CreateAssignmentRequest, CreateResourceRequest,
    DeleteResourceRequest, DeleteResourceResponse, GetResourceRequest, ListResourcesRequest, ListResourcesResponse,
    ListUnlinkedUsersRequest, PatchResourceRequest, Reference, ReplaceResourceRequest, Resource, ResourceType,
};
use proto::events::v1::Source;
use scim::{GroupDocument, Member, Page, PatchRequest, UserDocument};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::store::{Store, StoredGroup, StoredUser, Tenant};

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

/// The resource type of a request; an unspecified one is a caller's bug.
fn kind(t: i32) -> Result<ResourceType, DomainError> {
    match ResourceType::try_from(t) {
        Ok(ResourceType::User) => Ok(ResourceType::User),
        Ok(ResourceType::Group) => Ok(ResourceType::Group),
        _ => Err(DomainError::new(proto::ErrorKind::InvalidValue, "Unknown resource type.")),
    }
}

fn encode(doc: &Map<String, Value>) -> Result<Bytes, DomainError> {
    serde_json::to_vec(doc).map(Bytes::from).map_err(|_| DomainError::internal())
}

fn references(members: &Option<Vec<Member>>) -> (bool, Vec<Reference>) {
    match members {
        Some(m) => (true, m.iter().map(|m| Reference { value: m.value.clone(), display: m.display.clone() }).collect()),
        None => (false, Vec::new()),
    }
}

fn user_resource(user: &StoredUser) -> Result<Resource, DomainError> {
    let (membership_loaded, membership) = references(&user.groups);
    Ok(Resource {
        id: user.id.to_string(),
        version: user.version,
        created: Some(proto::time::to_timestamp(user.created)),
        last_modified: Some(proto::time::to_timestamp(user.last_modified)),
        source: user.source as i32,
        document: encode(user.document.as_map())?,
        membership_loaded,
        membership,
    })
}

fn group_resource(group: &StoredGroup) -> Result<Resource, DomainError> {
    let (membership_loaded, membership) = references(&group.members);
    Ok(Resource {
        id: group.id.to_string(),
        version: group.version,
        created: Some(proto::time::to_timestamp(group.created)),
        last_modified: Some(proto::time::to_timestamp(group.last_modified)),
        source: Source::Scim as i32,
        document: encode(group.document.as_map())?,
        membership_loaded,
        membership,
    })
}

fn parse_json(bytes: &[u8]) -> Result<Value, DomainError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DomainError::from(scim::Error::invalid_syntax(format!("The request body is not valid JSON: {e}.")))
    })
}

fn reply<T>(result: Result<T, DomainError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| e.to_status())
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let result = self.store.authenticate(&req.api_key, req.subdomain.as_deref()).await;
        reply(result.map(|t| AuthenticateResponse { tenant_id: t.id.to_string(), subdomain: t.subdomain }))
    }

    async fn create_resource(&self, request: Request<CreateResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let body = parse_json(&req.document)?;
            match kind(req.r#type)? {
                ResourceType::Group => {
                    let (doc, members) = GroupDocument::from_request(body)?;
                    doc.validate()?;
                    group_resource(&self.store.create_group(&tenant, doc, members.unwrap_or_default()).await?)
                }
                _ => {
                    let mut doc = UserDocument::from_request(body)?;
                    doc.validate_new()?;
                    let source = Source::try_from(req.source).unwrap_or(Source::Scim);
                    user_resource(&self.store.create_user(&tenant, doc, source).await?)
                }
            }
        }
        .await;
        reply(result)
    }

    async fn get_resource(&self, request: Request<GetResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            match kind(req.r#type)? {
                ResourceType::Group => {
                    group_resource(&self.store.get_group(&tenant, &req.id, req.include_membership).await?)
                }
                _ => user_resource(&self.store.get_user(&tenant, &req.id, req.include_membership).await?),
            }
        }
        .await;
        reply(result)
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let filter = match req.filter.trim() {
                "" => None,
                f => Some(scim::filter::parse(f)?),
            };
            let page = Page { start_index: req.start_index.max(1), count: req.count.min(scim::MAX_PAGE_SIZE) };
            let sort = (!req.sort_by.trim().is_empty()).then_some((req.sort_by.trim(), req.descending));
            let (total_results, resources) = match kind(req.r#type)? {
                ResourceType::Group => {
                    let (total, groups) =
                        self.store.list_groups(&tenant, filter.as_ref(), page, sort, req.include_membership).await?;
                    (total, groups.iter().map(group_resource).collect::<Result<_, _>>()?)
                }
                _ => {
                    let (total, users) =
                        self.store.list_users(&tenant, filter.as_ref(), page, sort, req.include_membership).await?;
                    (total, users.iter().map(user_resource).collect::<Result<_, _>>()?)
                }
            };
            Ok(ListResourcesResponse { total_results, resources })
        }
        .await;
        reply(result)
    }

    async fn replace_resource(&self, request: Request<ReplaceResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let body = parse_json(&req.document)?;
            let resource = match kind(req.r#type)? {
                ResourceType::Group => {
                    let (doc, members) = GroupDocument::from_request(body)?;
                    doc.validate()?;
                    let group = self.store.replace_group(&tenant, &req.id, doc, members, req.if_match_version).await?;
                    self.reload_group(&tenant, group, req.include_membership).await?
                }
                _ => {
                    let doc = UserDocument::from_request(body)?;
                    let user = self.store.replace_user(&tenant, &req.id, doc, req.if_match_version).await?;
                    self.reload_user(&tenant, user, req.include_membership).await?
                }
            };
            Ok(resource)
        }
        .await;
        reply(result)
    }

    async fn patch_resource(&self, request: Request<PatchResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let patch = PatchRequest::parse(&parse_json(&req.patch)?)?;
            match kind(req.r#type)? {
                ResourceType::Group => {
                    let group = self.store.patch_group(&tenant, &req.id, &patch, req.if_match_version).await?;
                    self.reload_group(&tenant, group, req.include_membership).await
                }
                _ => {
                    let user = self.store.patch_user(&tenant, &req.id, &patch, req.if_match_version).await?;
                    self.reload_user(&tenant, user, req.include_membership).await
                }
            }
        }
        .await;
        reply(result)
    }

    async fn list_unlinked_users(
        &self,
        request: Request<ListUnlinkedUsersRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let users = self.store.list_unlinked_users(&tenant).await?;
            Ok(ListResourcesResponse {
                total_results: users.len() as u64,
                resources: users.iter().map(user_resource).collect::<Result<_, _>>()?,
            })
        }
        .await;
        reply(result)
    }

    async fn create_assignment(
        &self,
        request: Request<CreateAssignmentRequest>,
    ) -> Result<Response<Assignment>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let a = self.store.create_assignment(&tenant, &req.user_id, &req.content_id, &req.title).await?;
            Ok(Assignment {
                id: a.id.to_string(),
                user_id: a.user_id.to_string(),
                content_id: a.content_id,
                title: a.title,
                created: Some(proto::time::to_timestamp(a.created)),
                created_now: a.created_now,
            })
        }
        .await;
        reply(result)
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResourceResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            match kind(req.r#type)? {
                ResourceType::Group => self.store.delete_group(&tenant, &req.id, req.if_match_version).await?,
                _ => self.store.delete_user(&tenant, &req.id, req.if_match_version).await?,
            }
            Ok(DeleteResourceResponse {})
        }
        .await;
        reply(result)
    }
}

impl DirectoryService {
    /// The written group as the response shows it: with its members when asked for.
    async fn reload_group(
        &self,
        tenant: &Tenant,
        group: StoredGroup,
        with_members: bool,
    ) -> Result<Resource, DomainError> {
        if with_members {
            group_resource(&self.store.get_group(tenant, &group.id.to_string(), true).await?)
        } else {
            group_resource(&StoredGroup { members: None, ..group })
        }
    }

    /// The written user as the response shows it: with their groups when asked for.
    async fn reload_user(&self, tenant: &Tenant, user: StoredUser, with_groups: bool) -> Result<Resource, DomainError> {
        if with_groups {
            user_resource(&self.store.get_user(tenant, &user.id.to_string(), true).await?)
        } else {
            user_resource(&user)
        }
    }
}
