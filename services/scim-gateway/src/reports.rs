//! Reporting (`GET /api/v1/reports/learners`, admin scope): the tenant's learners as the platform
//! reports them (ADR 0024). Archived users are kept but left out unless `?include=archived`.
//!
//! - JSON pages by cursor (`?cursor=`, `?limit=` up to 1000, `nextCursor` while more remain);
//! - CSV (`Accept: text/csv`): the whole report, streamed page by page as the client reads it, so
//!   the gateway holds one page whatever the tenant's size;
//! - `?groupBy=division|costCenter`: counts, in JSON or CSV.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use proto::directory::v1::{
    CountLearnersRequest, Learner, LearnerGrouping, ReportLearnersRequest, ReportLearnersResponse,
};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::TenantCtx;
use crate::error::ApiError;

/// A page of the CSV stream (the directory's largest).
const CSV_PAGE: u32 = 1000;

/// The columns of the report, in order (the CSV header and the JSON keys).
const COLUMNS: [&str; 11] = [
    "id",
    "userName",
    "givenName",
    "familyName",
    "email",
    "role",
    "costCenter",
    "division",
    "active",
    "created",
    "lastModified",
];

/// What was asked for.
#[derive(Debug, Clone)]
pub(crate) struct ReportQuery {
    pub include_archived: bool,
    pub group_by: Option<LearnerGrouping>,
    pub cursor: String,
    pub limit: u32,
}

impl ReportQuery {
    pub(crate) fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let bad = |detail: &str| ApiError::from(scim::Error::invalid_value(detail));
        let include_archived = match q.get("include").map(String::as_str) {
            None | Some("") => false,
            Some("archived") => true,
            Some(_) => return Err(bad("include must be archived (or absent, for active users only).")),
        };
        let group_by = match q.get("groupBy").map(String::as_str) {
            None | Some("") => None,
            Some("division") => Some(LearnerGrouping::Division),
            Some("costCenter") => Some(LearnerGrouping::CostCenter),
            Some(_) => return Err(bad("groupBy must be division or costCenter.")),
        };
        let limit = match q.get("limit") {
            None => 100,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| bad("limit must be an integer from 1 to 1000."))?,
        };
        Ok(ReportQuery { include_archived, group_by, cursor: q.get("cursor").cloned().unwrap_or_default(), limit })
    }
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv"))))
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    scim::user::format_time(proto::time::from_timestamp(t))
}

fn learner_json(l: &Learner) -> Value {
    json!({
        "id": l.id,
        "userName": l.user_name,
        "givenName": l.given_name,
        "familyName": l.family_name,
        "email": l.email,
        "role": l.role,
        "costCenter": l.cost_center,
        "division": l.division,
        "active": l.active,
        "created": time(l.created.as_ref()),
        "lastModified": time(l.last_modified.as_ref()),
    })
}

/// A cell as a spreadsheet will not run it: text that a spreadsheet would take for a formula
/// (`=`, `+`, `-`, `@`, a tab or a carriage return first) is prefixed with `'`.
fn cell(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

fn csv_bytes<'a>(rows: impl IntoIterator<Item = Vec<std::borrow::Cow<'a, str>>>) -> Result<Bytes, ApiError> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        w.write_record(row.iter().map(|c| c.as_bytes())).map_err(|_| ApiError::from(proto::DomainError::internal()))?;
    }
    w.into_inner().map(Bytes::from).map_err(|_| ApiError::from(proto::DomainError::internal()))
}

fn learner_cells(l: &Learner) -> Vec<std::borrow::Cow<'_, str>> {
    vec![
        l.id.as_str().into(),
        cell(&l.user_name),
        cell(&l.given_name),
        cell(&l.family_name),
        cell(&l.email),
        l.role.as_str().into(),
        cell(&l.cost_center),
        cell(&l.division),
        if l.active { "true" } else { "false" }.into(),
        time(l.created.as_ref()).into(),
        time(l.last_modified.as_ref()).into(),
    ]
}

fn csv_response(filename: &str, body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

async fn page(
    state: &AppState,
    tenant_id: &str,
    include_archived: bool,
    after: String,
    limit: u32,
) -> Result<ReportLearnersResponse, ApiError> {
    Ok(state
        .directory
        .clone()
        .report_learners(ReportLearnersRequest { tenant_id: tenant_id.to_owned(), include_archived, after, limit })
        .await?
        .into_inner())
}

/// The whole report as CSV, streamed: the first page is read before the answer starts (so that a
/// refusal is still a status), then one page at a time as the client takes them. A failure after
/// the start ends the body early, which the client sees as a transfer cut short, never as a
/// shorter report.
pub(crate) async fn learners_csv(
    state: &AppState,
    tenant_id: &str,
    include_archived: bool,
) -> Result<Response, ApiError> {
    let first = page(state, tenant_id, include_archived, String::new(), CSV_PAGE).await?;
    let header = csv_bytes([COLUMNS.iter().map(|c| std::borrow::Cow::Borrowed(*c)).collect()])?;
    let head = csv_bytes(first.learners.iter().map(learner_cells))?;
    let (state, tenant_id) = (state.clone(), tenant_id.to_owned());
    let rest = futures::stream::try_unfold(first.next_after, move |after| {
        let (state, tenant_id) = (state.clone(), tenant_id.clone());
        async move {
            let Some(after) = after else { return Ok(None) };
            let next = page(&state, &tenant_id, include_archived, after, CSV_PAGE).await.map_err(|e| {
                tracing::warn!(status = %e.status(), "a CSV report stopped before its end");
                std::io::Error::other("the report could not be read to its end")
            })?;
            let bytes = csv_bytes(next.learners.iter().map(learner_cells)).map_err(|_| std::io::Error::other("csv"))?;
            Ok::<_, std::io::Error>(Some((bytes, next.next_after)))
        }
    });
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(header), Ok(head)]);
    let name = if include_archived { "learners-with-archived.csv" } else { "learners.csv" };
    Ok(csv_response(name, Body::from_stream(futures::StreamExt::chain(chunks, rest))))
}

/// The counts by division or cost center, as JSON or CSV.
pub(crate) async fn learner_counts(
    state: &AppState,
    tenant_id: &str,
    q: &ReportQuery,
    grouping: LearnerGrouping,
    csv: bool,
) -> Result<Response, ApiError> {
    let counts = state
        .directory
        .clone()
        .count_learners(CountLearnersRequest {
            tenant_id: tenant_id.to_owned(),
            include_archived: q.include_archived,
            group_by: grouping as i32,
        })
        .await?
        .into_inner()
        .counts;
    let key = if grouping == LearnerGrouping::Division { "division" } else { "costCenter" };
    if csv {
        let mut rows = vec![vec![std::borrow::Cow::Borrowed(key), "count".into()]];
        rows.extend(counts.iter().map(|c| vec![cell(&c.key), c.count.to_string().into()]));
        return Ok(csv_response(&format!("learners-by-{key}.csv"), Body::from(csv_bytes(rows)?)));
    }
    let total: u64 = counts.iter().map(|c| c.count).sum();
    let groups: Vec<Value> = counts.iter().map(|c| json!({key: c.key, "count": c.count})).collect();
    Ok(Json(json!({"groupBy": key, "includeArchived": q.include_archived, "total": total, "groups": groups}))
        .into_response())
}

/// `GET /api/v1/reports/learners`.
pub async fn learners(
    State(state): State<AppState>,
    Extension(tenant): Extension<Arc<TenantCtx>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|_| ApiError::from(scim::Error::invalid_value("The query string is not valid URL encoding.")))?;
    let q = ReportQuery::parse(&q)?;
    let csv = wants_csv(&headers);
    if let Some(grouping) = q.group_by {
        return learner_counts(&state, &tenant.tenant_id, &q, grouping, csv).await;
    }
    if csv {
        if !q.cursor.is_empty() {
            return Err(scim::Error::invalid_value("The CSV report is the whole report: it takes no cursor.").into());
        }
        return learners_csv(&state, &tenant.tenant_id, q.include_archived).await;
    }
    let reply = page(&state, &tenant.tenant_id, q.include_archived, q.cursor.clone(), q.limit).await?;
    let learners: Vec<Value> = reply.learners.iter().map(learner_json).collect();
    let mut body = json!({"includeArchived": q.include_archived, "count": learners.len(), "learners": learners});
    if let Some(next) = reply.next_after {
        body["nextCursor"] = json!(next);
    }
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_not_run_by_spreadsheets() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("Ada"), "Ada");
        assert_eq!(cell(""), "");
    }

    #[test]
    fn csv_is_asked_for_by_accept() {
        let mut h = HeaderMap::new();
        assert!(!wants_csv(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/csv;q=0.5"));
        assert!(wants_csv(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/csvx"));
        assert!(!wants_csv(&h));
    }

    #[test]
    fn cells_with_commas_quotes_and_lines_stay_one_cell() {
        let bytes = csv_bytes([vec!["a,b".into(), "say \"hi\"".into(), "two\nlines".into()]]).unwrap();
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(row.iter().collect::<Vec<_>>(), ["a,b", "say \"hi\"", "two\nlines"]);
    }

    #[test]
    fn bad_parameters_are_named() {
        let q = |pairs: &[(&str, &str)]| {
            ReportQuery::parse(&pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
        };
        assert!(q(&[("include", "everyone")]).is_err());
        assert!(q(&[("groupBy", "team")]).is_err());
        assert!(q(&[("limit", "0")]).is_err());
        let ok = q(&[("include", "archived"), ("groupBy", "costCenter"), ("limit", "1000")]).unwrap();
        assert!(ok.include_archived && ok.group_by == Some(LearnerGrouping::CostCenter) && ok.limit == 1000);
    }
}
