//! The gRPC services: `Directory` (what the gateway calls on behalf of a tenant) and `Admin`
//! (operators: tenants, keys, the brake). Each handler decodes, resolves the tenant, calls the
//! store and encodes; errors leave as `tonic::Status` through the table in `proto::error`. Writes
//! return the ids of the events they caused in the `x-event-ids` metadata (the gateway's request
//! log keeps them).

use std::cell::RefCell;
use std::future::Future;

use bytes::Bytes;
use proto::directory::v1::admin_server::Admin;
use proto::directory::v1::directory_server::Directory;
use proto::directory::v1::{
    Assignment, AuthenticateRequest, AuthenticateResponse, CountLearnersRequest, CountLearnersResponse,
    CreateAssignmentRequest, CreateResourceRequest, CreateSessionRequest, CreateSessionResponse, CreateTenantRequest,
    CreateTenantResponse, DeleteResourceRequest, DeleteResourceResponse, EndSessionResponse, EraseUserRequest,
    EraseUserResponse, GetAssignmentRequest, GetRequestRequest, GetResourceRequest, HeldChange, HourActivity,
    IssueKeyRequest, IssueKeyResponse, IssueTenantKeyRequest, KeyInfo, Learner, LearnerCount, LearnerGrouping,
    ListHeldResponse, ListKeysResponse, ListRequestsRequest, ListRequestsResponse, ListResourcesRequest,
    ListResourcesResponse, ListUnlinkedUsersRequest, PatchResourceRequest, PingRequest, PingResponse,
    RecordRequestsRequest, RecordRequestsResponse, Reference, ReplaceResourceRequest, ReportLearnersRequest,
    ReportLearnersResponse, RequestRecord, ResolveHeldRequest, ResolveHeldResponse, ResolveTenantHeldRequest, Resource,
    ResourceType, RevokeKeyRequest, RevokeKeyResponse, RevokeTenantKeyRequest, Session, SessionRef, SetUserRoleRequest,
    TenantActivityResponse, TenantInfo, TenantRef, TenantScope, UpdateTenantRequest,
};
use proto::events::v1::Source;
use proto::time::{from_timestamp, to_timestamp};
use proto::{DomainError, ErrorKind};
use scim::{GroupDocument, Member, Page, PatchRequest, UserDocument};
use serde_json::{Map, Value};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::erasure::{RELAY_WAIT, StreamEraser};
use crate::fairness::{ListCap, Shares, TenantCall};
use crate::store::{
    ApiKeyInfo, ConsoleSession, EVENT_IDS, Erasure, Grouping, HeldInfo, LoggedRequest, REPORT_MAX_PAGE, RequestQuery,
    SessionLimits, SessionOwner, Store, StoredAssignment, StoredGroup, StoredUser, Tenant, TenantUpdate,
};

/// The Directory service.
pub struct DirectoryService {
    store: Store,
    console: ConsolePolicy,
    shares: Shares,
    list_cap: ListCap,
    eraser: StreamEraser,
}

/// What the directory itself enforces of console sessions: which operator token opens an
/// operator's session (none configured: no operator can sign in), and how long any session lives
/// at most, however active.
#[derive(Debug, Clone)]
pub struct ConsolePolicy {
    pub operator: Option<infra::secret::Token>,
    pub max_lifetime: std::time::Duration,
}

impl ConsolePolicy {
    fn limits(&self, idle: std::time::Duration) -> SessionLimits {
        SessionLimits {
            idle,
            max_lifetime: self.max_lifetime,
            operator_generation: self.operator.as_ref().map(infra::secret::Token::generation),
        }
    }
}

impl DirectoryService {
    pub fn new(store: Store, console: ConsolePolicy, shares: Shares, list_cap: ListCap, eraser: StreamEraser) -> Self {
        DirectoryService { store, console, shares, list_cap, eraser }
    }

    /// The tenant a call is for, with one of its shares of the database connections for as long
    /// as the call holds it.
    async fn tenant(&self, id: &str) -> Result<TenantCall, DomainError> {
        let id = Uuid::parse_str(id).map_err(|_| DomainError::new(ErrorKind::Unauthenticated, "Unknown tenant."))?;
        self.shares.enter(self.store.tenant(id).await?).await
    }
}

/// The resource type of a request; an unspecified one is a caller's bug.
fn kind(t: i32) -> Result<ResourceType, DomainError> {
    match ResourceType::try_from(t) {
        Ok(ResourceType::User) => Ok(ResourceType::User),
        Ok(ResourceType::Group) => Ok(ResourceType::Group),
        _ => Err(DomainError::new(ErrorKind::InvalidValue, "Unknown resource type.")),
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
        created: Some(to_timestamp(user.created)),
        last_modified: Some(to_timestamp(user.last_modified)),
        source: user.source as i32,
        document: encode(user.document.as_map())?,
        membership_loaded,
        membership,
        role: user.role.clone(),
    })
}

fn group_resource(group: &StoredGroup) -> Result<Resource, DomainError> {
    let (membership_loaded, membership) = references(&group.members);
    Ok(Resource {
        id: group.id.to_string(),
        version: group.version,
        created: Some(to_timestamp(group.created)),
        last_modified: Some(to_timestamp(group.last_modified)),
        source: Source::Scim as i32,
        document: encode(group.document.as_map())?,
        membership_loaded,
        membership,
        role: String::new(),
    })
}

/// What an erasure did, for its caller.
fn erasure_response(done: Erasure, stream_messages: u64) -> EraseUserResponse {
    EraseUserResponse {
        user_id: done.user_id.to_string(),
        erased_at: Some(to_timestamp(done.erased_at)),
        erased_by: done.erased_by,
        already_erased: done.already,
        request_log_rows: done.request_log_rows,
        outbox_events: done.outbox_events,
        stream_messages,
    }
}

fn assignment(a: StoredAssignment) -> Assignment {
    Assignment {
        id: a.id.to_string(),
        user_id: a.user_id.to_string(),
        content_id: a.content_id,
        title: a.title,
        created: Some(to_timestamp(a.created)),
        created_now: a.created_now,
    }
}

fn record(r: LoggedRequest) -> RequestRecord {
    RequestRecord {
        id: r.id.to_string(),
        tenant_id: r.tenant_id.to_string(),
        at: Some(to_timestamp(r.at)),
        method: r.method,
        path: r.path,
        status: u32::try_from(r.status).unwrap_or(0),
        latency_ms: r.latency_ms,
        user_agent: r.user_agent,
        event_ids: r.event_ids.iter().map(Uuid::to_string).collect(),
        request_body: r.request_body,
        response_body: r.response_body,
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, DomainError> {
    serde_json::from_slice(bytes).map_err(|e| {
        DomainError::from(scim::Error::invalid_syntax(format!("The request body is not valid JSON: {e}.")))
    })
}

fn reply<T>(result: Result<T, DomainError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(|e| e.to_status())
}

/// Runs a write, and answers with the ids of the events it caused in `x-event-ids`.
async fn with_events<T>(write: impl Future<Output = Result<T, DomainError>>) -> Result<Response<T>, Status> {
    let (result, ids) = EVENT_IDS
        .scope(RefCell::new(Vec::new()), async {
            let result = write.await;
            (result, EVENT_IDS.with(|ids| ids.take()))
        })
        .await;
    let mut response = reply(result)?;
    if !ids.is_empty() {
        let joined = ids.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",");
        if let Ok(v) = joined.parse() {
            response.metadata_mut().insert("x-event-ids", v);
        }
    }
    Ok(response)
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn ping(&self, _request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {}))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let result = self.store.authenticate(&req.api_key, req.subdomain.as_deref()).await;
        reply(result.map(|a| AuthenticateResponse {
            tenant_id: a.tenant.id.to_string(),
            subdomain: a.tenant.subdomain,
            key_id: a.key_id.to_string(),
            paused: a.tenant.paused,
            rate_limit_per_second: a.tenant.rate_limit_per_second.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            rate_limit_burst: a.tenant.rate_limit_burst.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            max_in_flight: a.tenant.max_in_flight.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            scopes: a.scopes,
        }))
    }

    async fn create_resource(&self, request: Request<CreateResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        with_events(async {
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
                    // A caller that names no source is provisioning, the silent default.
                    let source = match Source::try_from(req.source) {
                        Ok(Source::Unspecified) | Err(_) => Source::Scim,
                        Ok(s) => s,
                    };
                    user_resource(&self.store.create_user(&tenant, doc, source).await?)
                }
            }
        })
        .await
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
            let membership = req.include_membership.then_some(self.list_cap);
            let (total_results, resources) = match kind(req.r#type)? {
                ResourceType::Group => {
                    let (total, groups) =
                        self.store.list_groups(&tenant, filter.as_ref(), page, sort, membership).await?;
                    (total, groups.iter().map(group_resource).collect::<Result<_, _>>()?)
                }
                _ => {
                    let (total, users) =
                        self.store.list_users(&tenant, filter.as_ref(), page, sort, membership).await?;
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
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let body = parse_json(&req.document)?;
            match kind(req.r#type)? {
                ResourceType::Group => {
                    let (doc, members) = GroupDocument::from_request(body)?;
                    doc.validate()?;
                    let group = self.store.replace_group(&tenant, &req.id, doc, members, req.if_match_version).await?;
                    self.reload_group(&tenant, group, req.include_membership).await
                }
                _ => {
                    let doc = UserDocument::from_request(body)?;
                    let user = self
                        .store
                        .replace_user(&tenant, &req.id, doc, req.if_match_version, req.include_membership)
                        .await?;
                    user_resource(&user)
                }
            }
        })
        .await
    }

    async fn patch_resource(&self, request: Request<PatchResourceRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let patch = PatchRequest::parse(&parse_json(&req.patch)?)?;
            match kind(req.r#type)? {
                ResourceType::Group => {
                    let group = self.store.patch_group(&tenant, &req.id, &patch, req.if_match_version).await?;
                    self.reload_group(&tenant, group, req.include_membership).await
                }
                _ => {
                    let user = self
                        .store
                        .patch_user(&tenant, &req.id, &patch, req.if_match_version, req.include_membership)
                        .await?;
                    user_resource(&user)
                }
            }
        })
        .await
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<DeleteResourceResponse>, Status> {
        let req = request.into_inner();
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            match kind(req.r#type)? {
                ResourceType::Group => self.store.delete_group(&tenant, &req.id, req.if_match_version).await?,
                _ => self.store.delete_user(&tenant, &req.id, req.if_match_version).await?,
            }
            Ok(DeleteResourceResponse {})
        })
        .await
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
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let a = self.store.create_assignment(&tenant, &req.user_id, &req.content_id, &req.title).await?;
            Ok(assignment(a))
        })
        .await
    }

    async fn set_user_role(&self, request: Request<SetUserRoleRequest>) -> Result<Response<Resource>, Status> {
        let req = request.into_inner();
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            user_resource(&self.store.set_role(&tenant, &req.user_id, &req.role, &req.changed_by).await?)
        })
        .await
    }

    async fn erase_user(&self, request: Request<EraseUserRequest>) -> Result<Response<EraseUserResponse>, Status> {
        let req = request.into_inner();
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let by = req.erased_by.trim();
            if by.is_empty() {
                return Err(DomainError::new(ErrorKind::InvalidValue, "An erasure must say who makes it."));
            }
            let (done, stream_messages) =
                crate::erasure::erase(&self.store, &self.eraser, &tenant, &req.user_id, by, RELAY_WAIT).await?;
            Ok(erasure_response(done, stream_messages))
        })
        .await
    }

    async fn report_learners(
        &self,
        request: Request<ReportLearnersRequest>,
    ) -> Result<Response<ReportLearnersResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let after =
                match req.after.as_str() {
                    "" => None,
                    a => Some(Uuid::parse_str(a).map_err(|_| {
                        DomainError::new(ErrorKind::InvalidValue, "cursor is not one this report gave.")
                    })?),
                };
            let limit = req.limit.clamp(1, REPORT_MAX_PAGE);
            let rows = self.store.report_learners(&tenant, req.include_archived, after, limit).await?;
            // A full page may have more after it; a shorter one is the last.
            let next_after = rows.last().filter(|_| rows.len() == limit as usize).map(|r| r.id.to_string());
            let learners = rows
                .into_iter()
                .map(|r| Learner {
                    id: r.id.to_string(),
                    user_name: r.user_name,
                    given_name: r.given_name,
                    family_name: r.family_name,
                    email: r.email,
                    role: r.role,
                    cost_center: r.cost_center,
                    division: r.division,
                    active: r.active,
                    created: Some(to_timestamp(r.created)),
                    last_modified: Some(to_timestamp(r.last_modified)),
                })
                .collect();
            Ok(ReportLearnersResponse { learners, next_after })
        }
        .await;
        reply(result)
    }

    async fn count_learners(
        &self,
        request: Request<CountLearnersRequest>,
    ) -> Result<Response<CountLearnersResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let by = match LearnerGrouping::try_from(req.group_by) {
                Ok(LearnerGrouping::Division) => Grouping::Division,
                Ok(LearnerGrouping::CostCenter) => Grouping::CostCenter,
                _ => return Err(DomainError::new(ErrorKind::InvalidValue, "groupBy must be division or costCenter.")),
            };
            let counts = self.store.count_learners(&tenant, req.include_archived, by).await?;
            Ok(CountLearnersResponse {
                counts: counts
                    .into_iter()
                    .map(|(key, count)| LearnerCount { key, count: u64::try_from(count).unwrap_or_default() })
                    .collect(),
            })
        }
        .await;
        reply(result)
    }

    async fn get_assignment(&self, request: Request<GetAssignmentRequest>) -> Result<Response<Assignment>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            Ok(assignment(self.store.get_assignment(&tenant, &req.id).await?))
        }
        .await;
        reply(result)
    }

    async fn record_requests(
        &self,
        request: Request<RecordRequestsRequest>,
    ) -> Result<Response<RecordRequestsResponse>, Status> {
        let records: Vec<LoggedRequest> = request
            .into_inner()
            .records
            .into_iter()
            .filter_map(|r| {
                Some(LoggedRequest {
                    tenant_id: Uuid::parse_str(&r.tenant_id).ok()?,
                    id: Uuid::parse_str(&r.id).ok()?,
                    at: from_timestamp(r.at.as_ref()),
                    method: r.method,
                    path: r.path,
                    status: i32::try_from(r.status).unwrap_or(0),
                    latency_ms: r.latency_ms,
                    user_agent: r.user_agent,
                    event_ids: r.event_ids.iter().filter_map(|e| Uuid::parse_str(e).ok()).collect(),
                    request_body: r.request_body,
                    response_body: r.response_body,
                })
            })
            .collect();
        reply(self.store.record_requests(&records).await.map(|()| RecordRequestsResponse {}))
    }

    async fn list_requests(
        &self,
        request: Request<ListRequestsRequest>,
    ) -> Result<Response<ListRequestsResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let query = RequestQuery {
                since: req.since.as_ref().map(|t| from_timestamp(Some(t))),
                until: req.until.as_ref().map(|t| from_timestamp(Some(t))),
                method: (!req.method.is_empty()).then_some(req.method),
                status_min: (req.status_min > 0).then(|| i32::try_from(req.status_min).unwrap_or(0)),
                status_max: (req.status_max > 0).then(|| i32::try_from(req.status_max).unwrap_or(999)),
                contains: (!req.contains.is_empty()).then_some(req.contains),
                limit: if req.limit == 0 { 100 } else { i64::from(req.limit) },
            };
            let records = self.store.list_requests(&tenant, &query).await?;
            Ok(ListRequestsResponse { records: records.into_iter().map(record).collect() })
        }
        .await;
        reply(result)
    }

    async fn get_request(&self, request: Request<GetRequestRequest>) -> Result<Response<RequestRecord>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            Ok(record(self.store.get_request(&tenant, &req.id).await?))
        }
        .await;
        reply(result)
    }

    async fn create_session(
        &self,
        request: Request<CreateSessionRequest>,
    ) -> Result<Response<CreateSessionResponse>, Status> {
        let req = request.into_inner();
        if req.operator == req.api_key.is_some() {
            return Err(DomainError::new(ErrorKind::InvalidValue, "A session is an admin's (a key) or an operator's.")
                .to_status());
        }
        let limits = self.console.limits(std::time::Duration::from_secs(u64::from(req.idle_secs.max(60))));
        let owner = match (&req.api_key, &limits.operator_generation) {
            (Some(key), _) => SessionOwner::Admin { api_key: key },
            // The operator token is checked here, whatever the caller checked: a session for any
            // tenant is worth nothing without it.
            (None, Some(generation))
                if self
                    .console
                    .operator
                    .as_ref()
                    .is_some_and(|t| t.matches(req.operator_token.as_deref().unwrap_or(""))) =>
            {
                SessionOwner::Operator { generation }
            }
            (None, _) => {
                tracing::info!("an operator session was refused: the operator token is missing or wrong");
                return Err(
                    DomainError::new(ErrorKind::Unauthenticated, "The operator token is not valid.").to_status()
                );
            }
        };
        let result = self.store.create_session(&req.subdomain, owner, &limits).await;
        reply(result.map(|(session_id, s)| CreateSessionResponse { session_id, session: Some(session(s)) }))
    }

    async fn get_session(&self, request: Request<SessionRef>) -> Result<Response<Session>, Status> {
        let req = request.into_inner();
        let limits = self.console.limits(std::time::Duration::from_secs(u64::from(req.idle_secs)));
        reply(self.store.session(&req.session_id, &limits).await.map(session))
    }

    async fn end_session(&self, request: Request<SessionRef>) -> Result<Response<EndSessionResponse>, Status> {
        reply(self.store.end_session(&request.into_inner().session_id).await.map(|()| EndSessionResponse {}))
    }

    async fn list_tenant_keys(&self, request: Request<TenantScope>) -> Result<Response<ListKeysResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request.into_inner().tenant_id).await?;
            self.store.list_keys_of(&tenant).await.map(keys_response)
        };
        reply(result.await)
    }

    async fn issue_tenant_key(
        &self,
        request: Request<IssueTenantKeyRequest>,
    ) -> Result<Response<IssueKeyResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let k = self.store.issue_key_of(&tenant, &req.name, None, &req.scopes).await?;
            Ok(IssueKeyResponse { key_id: k.id.to_string(), api_key: k.key })
        };
        reply(result.await)
    }

    async fn revoke_tenant_key(
        &self,
        request: Request<RevokeTenantKeyRequest>,
    ) -> Result<Response<RevokeKeyResponse>, Status> {
        let req = request.into_inner();
        let result = async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let id = Uuid::parse_str(&req.key_id).map_err(|_| DomainError::not_found("There is no such key."))?;
            self.store.revoke_key(id, Some(&tenant)).await.map(|()| RevokeKeyResponse {})
        };
        reply(result.await)
    }

    async fn list_tenant_held(&self, request: Request<TenantScope>) -> Result<Response<ListHeldResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request.into_inner().tenant_id).await?;
            self.store.list_held_of(&tenant).await.map(held_response)
        };
        reply(result.await)
    }

    async fn resolve_tenant_held(
        &self,
        request: Request<ResolveTenantHeldRequest>,
    ) -> Result<Response<ResolveHeldResponse>, Status> {
        let req = request.into_inner();
        with_events(async {
            let tenant = self.tenant(&req.tenant_id).await?;
            let ids = held_ids(&req.ids)?;
            let resolved = self.store.resolve_held_of(&tenant, req.release, &ids).await?;
            Ok(ResolveHeldResponse { resolved })
        })
        .await
    }

    async fn tenant_activity(&self, request: Request<TenantScope>) -> Result<Response<TenantActivityResponse>, Status> {
        let result = async {
            let tenant = self.tenant(&request.into_inner().tenant_id).await?;
            let a = self.store.activity(&tenant).await?;
            let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
            Ok(TenantActivityResponse {
                hours: a
                    .hours
                    .iter()
                    .map(|h| HourActivity {
                        hour: Some(to_timestamp(h.hour)),
                        requests: count(h.requests),
                        errors: count(h.errors),
                        events: count(h.events),
                    })
                    .collect(),
                last_success_at: a.last_success_at.map(to_timestamp),
                last_failure_at: a.last_failure_at.map(to_timestamp),
                held: count(a.held),
                brake_tripped: brake_tripped(&tenant),
                paused: tenant.paused,
                active_users: u64::try_from(a.active_users).unwrap_or(0),
                archived_users: u64::try_from(a.archived_users).unwrap_or(0),
                groups: u64::try_from(a.groups).unwrap_or(0),
            })
        };
        reply(result.await)
    }
}

fn session(s: ConsoleSession) -> Session {
    Session {
        tenant_id: s.tenant.id.to_string(),
        subdomain: s.tenant.subdomain,
        display_name: s.tenant.display_name,
        key_id: s.key_id.map(|k| k.to_string()).unwrap_or_default(),
        operator: s.operator,
        csrf_token: s.csrf_token,
        paused: s.tenant.paused,
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
}

/// The Admin service.
pub struct AdminService {
    store: Store,
}

impl AdminService {
    pub fn new(store: Store) -> Self {
        AdminService { store }
    }
}

/// Whether the tenant's brake tripped within its window.
fn brake_tripped(t: &Tenant) -> bool {
    t.brake_tripped_at.is_some_and(|at| {
        at > time::OffsetDateTime::now_utc() - time::Duration::seconds(i64::from(t.brake_window_secs))
    })
}

fn tenant_info(t: &Tenant) -> TenantInfo {
    let tripped = brake_tripped(t);
    TenantInfo {
        id: t.id.to_string(),
        subdomain: t.subdomain.clone(),
        display_name: t.display_name.clone(),
        status: t.status.clone(),
        paused: t.paused,
        adoption_policy: t.adoption_policy.clone(),
        rate_limit_per_second: t.rate_limit_per_second.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        rate_limit_burst: t.rate_limit_burst.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        max_in_flight: t.max_in_flight.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        brake_share: t.brake_share,
        brake_window_secs: u32::try_from(t.brake_window_secs).unwrap_or(0),
        brake_min_users: u32::try_from(t.brake_min_users).unwrap_or(0),
        brake_tripped: tripped,
    }
}

fn positive(v: Option<u32>) -> Option<i32> {
    v.map(|v| i32::try_from(v).unwrap_or(i32::MAX))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        let req = request.into_inner();
        let name = if req.display_name.trim().is_empty() { req.subdomain.clone() } else { req.display_name };
        reply(self.store.create_tenant(&req.subdomain, &name).await.map(|(t, key)| CreateTenantResponse {
            tenant: Some(tenant_info(&t)),
            key_id: key.id.to_string(),
            api_key: key.key,
        }))
    }

    async fn get_tenant(&self, request: Request<TenantRef>) -> Result<Response<TenantInfo>, Status> {
        reply(self.store.tenant_by_subdomain(&request.into_inner().subdomain).await.map(|t| tenant_info(&t)))
    }

    async fn update_tenant(&self, request: Request<UpdateTenantRequest>) -> Result<Response<TenantInfo>, Status> {
        let req = request.into_inner();
        let update = TenantUpdate {
            suspended: req.suspended,
            paused: req.paused,
            adoption_policy: req.adoption_policy,
            rate_limit_per_second: positive(req.rate_limit_per_second),
            rate_limit_burst: positive(req.rate_limit_burst),
            max_in_flight: positive(req.max_in_flight),
            brake_share: req.brake_share,
            brake_window_secs: positive(req.brake_window_secs),
            brake_min_users: positive(req.brake_min_users),
        };
        reply(self.store.update_tenant(&req.subdomain, &update).await.map(|t| tenant_info(&t)))
    }

    async fn issue_key(&self, request: Request<IssueKeyRequest>) -> Result<Response<IssueKeyResponse>, Status> {
        let req = request.into_inner();
        let expires = req.expires_at.as_ref().map(|t| from_timestamp(Some(t)));
        reply(
            self.store
                .issue_key(&req.subdomain, &req.name, expires, &req.scopes)
                .await
                .map(|k| IssueKeyResponse { key_id: k.id.to_string(), api_key: k.key }),
        )
    }

    async fn list_keys(&self, request: Request<TenantRef>) -> Result<Response<ListKeysResponse>, Status> {
        reply(self.store.list_keys(&request.into_inner().subdomain).await.map(keys_response))
    }

    async fn revoke_key(&self, request: Request<RevokeKeyRequest>) -> Result<Response<RevokeKeyResponse>, Status> {
        let id = Uuid::parse_str(&request.into_inner().key_id)
            .map_err(|_| DomainError::not_found("There is no such key.").to_status())?;
        reply(self.store.revoke_key(id, None).await.map(|()| RevokeKeyResponse {}))
    }

    async fn list_held(&self, request: Request<TenantRef>) -> Result<Response<ListHeldResponse>, Status> {
        reply(self.store.list_held(&request.into_inner().subdomain).await.map(held_response))
    }

    async fn resolve_held(
        &self,
        request: Request<ResolveHeldRequest>,
    ) -> Result<Response<ResolveHeldResponse>, Status> {
        let req = request.into_inner();
        let ids = held_ids(&req.ids).map_err(|e| e.to_status())?;
        reply(
            self.store
                .resolve_held(&req.subdomain, req.release, &ids)
                .await
                .map(|resolved| ResolveHeldResponse { resolved }),
        )
    }
}

fn keys_response(keys: Vec<ApiKeyInfo>) -> ListKeysResponse {
    ListKeysResponse {
        keys: keys
            .into_iter()
            .map(|k| KeyInfo {
                id: k.id.to_string(),
                name: k.name,
                prefix: k.prefix,
                created_at: Some(to_timestamp(k.created_at)),
                last_used_at: k.last_used_at.map(to_timestamp),
                expires_at: k.expires_at.map(to_timestamp),
                revoked_at: k.revoked_at.map(to_timestamp),
                scopes: k.scopes,
            })
            .collect(),
    }
}

fn held_response(held: Vec<HeldInfo>) -> ListHeldResponse {
    ListHeldResponse {
        held: held
            .into_iter()
            .map(|h| HeldChange {
                id: h.id.to_string(),
                user_id: h.user_id.to_string(),
                kind: h.kind,
                held_at: Some(to_timestamp(h.held_at)),
                user_name: h.user_name.unwrap_or_default(),
            })
            .collect(),
    }
}

/// Held changes' ids; one that is not an id is not found.
fn held_ids(ids: &[String]) -> Result<Vec<Uuid>, DomainError> {
    ids.iter()
        .map(|i| Uuid::parse_str(i).map_err(|_| DomainError::not_found("There is no such held change.")))
        .collect()
}

/// The Admin service's guard: `authorization: Bearer <DIRECTORY_ADMIN_TOKEN>` on every call.
pub fn admin_auth(token: infra::secret::Token) -> impl tonic::service::Interceptor + Clone {
    move |request: Request<()>| {
        if token.matches_bearer(authorization(&request)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("the admin token is missing or wrong"))
        }
    }
}

/// The Directory service's guard: `authorization: Bearer <DIRECTORY_TOKEN>` on every call, checked
/// on the metadata before the request's body is decoded; `None` (`DIRECTORY_INSECURE=true`) lets
/// every call through.
pub fn caller_auth(token: Option<infra::secret::Token>) -> impl tonic::service::Interceptor + Clone {
    move |request: Request<()>| match &token {
        None => Ok(request),
        Some(token) if token.matches_bearer(authorization(&request)) => Ok(request),
        Some(_) => Err(Status::unauthenticated("the caller's token is missing or wrong")),
    }
}

fn authorization<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|v| v.to_str().ok())
}
