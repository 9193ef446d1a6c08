//! The noisy-neighbour scenario (tests/tests/fairness.rs and `make bench`): one tenant runs the
//! most expensive requests a valid key can send (a `co` filter on a custom field over every user,
//! group listings with a 1,100-member group, a group read whole, PATCHes of 1,000 operations) in
//! a loop, from more workers than its cap on requests in flight; meanwhile another tenant runs
//! Okta's user flow (lookup by userName, create, read, replace, deactivate). The quiet tenant's
//! latencies are taken alone first, then beside the noise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::Okta;
use crate::load::{percentile, round};

/// How big the noisy tenant is and how hard it pushes.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    /// Users seeded into the noisy tenant (what its `co` filter scans).
    pub users: u64,
    /// Members of its big group (over the list cap of 1,000).
    pub group_members: usize,
    /// Its concurrent workers (more than the gateway's cap on its requests in flight).
    pub workers: usize,
}

/// The quiet tenant's answers: latency (ms) and status of each request, in order.
#[derive(Debug, Default, Clone)]
pub struct Flow {
    pub latencies: Vec<f64>,
    pub statuses: BTreeMap<u16, usize>,
    /// The first few answers that were not a success, for a failure message.
    pub failures: Vec<String>,
}

impl Flow {
    fn record(&mut self, what: &str, started: Instant, status: u16, body: &Value) {
        self.latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        *self.statuses.entry(status).or_default() += 1;
        if !(200..300).contains(&status) && self.failures.len() < 5 {
            self.failures.push(format!("{what}: {status} {body}"));
        }
    }

    /// Whether every request succeeded.
    pub fn all_succeeded(&self) -> bool {
        self.statuses.keys().all(|s| (200..300).contains(s))
    }

    /// `{requests, p50_ms, p99_ms, statuses}`.
    pub fn summary(&self) -> Value {
        let mut sorted = self.latencies.clone();
        sorted.sort_by(f64::total_cmp);
        json!({
            "requests": sorted.len(),
            "p50_ms": round(percentile(&sorted, 0.50)),
            "p99_ms": round(percentile(&sorted, 0.99)),
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Okta's user flow for `users` new users, `concurrency` at a time: lookup by userName (none),
/// create, read by id, replace, deactivate; five requests each.
pub async fn okta_user_flow(okta: &Okta, prefix: &str, users: usize, concurrency: usize) -> Flow {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (okta, prefix, next) = (okta.clone(), prefix.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut flow = Flow::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return flow;
                }
                one_user(&okta, &format!("{prefix}-{i}@quiet.example"), &mut flow).await;
            }
        }));
    }
    let mut flow = Flow::default();
    for t in tasks {
        let part = t.await.unwrap();
        flow.latencies.extend(part.latencies);
        for (s, n) in part.statuses {
            *flow.statuses.entry(s).or_default() += n;
        }
        flow.failures.extend(part.failures);
    }
    flow
}

/// Okta's user flow for one new user (five requests, each recorded in `flow`; the last three only
/// when the create answered an id).
pub async fn one_user(okta: &Okta, user_name: &str, flow: &mut Flow) {
    let t = Instant::now();
    let r = okta.get(&format!("/Users?filter=userName%20eq%20%22{user_name}%22&startIndex=1&count=100")).await;
    flow.record("lookup", t, r.status, &r.body);
    let mut body = crate::okta_user(user_name);
    let t = Instant::now();
    let r = okta.post("/Users", body.clone()).await;
    flow.record("create", t, r.status, &r.body);
    let Some(id) = r.body["id"].as_str().map(str::to_owned) else {
        return;
    };
    let t = Instant::now();
    let r = okta.get(&format!("/Users/{id}")).await;
    flow.record("get", t, r.status, &r.body);
    body["id"] = json!(id);
    body["name"]["familyName"] = json!("Replaced");
    let t = Instant::now();
    let r = okta.put(&format!("/Users/{id}"), body).await;
    flow.record("put", t, r.status, &r.body);
    let t = Instant::now();
    let r = okta.patch(&format!("/Users/{id}"), crate::okta_deactivation()).await;
    flow.record("deactivate", t, r.status, &r.body);
}

/// Sets the noisy tenant up: `noise.users` users seeded with a cost centre, ANALYZEd, and a group
/// of `noise.group_members` of them. Returns the group's id and its members' ids.
pub async fn prepare(
    store: &user_directory::Store,
    admin_db: &sqlx::PgPool,
    subdomain: &str,
    noise: Noise,
) -> (String, Vec<String>) {
    store.seed("noise", 0, 0, Some((subdomain, noise.users))).await.unwrap();
    let tenant = store.tenant_by_subdomain(subdomain).await.unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE tenant_id = $1 ORDER BY id LIMIT $2")
        .bind(tenant.id)
        .bind(i64::try_from(noise.group_members).unwrap())
        .fetch_all(admin_db)
        .await
        .unwrap();
    sqlx::query("ANALYZE").execute(admin_db).await.unwrap();
    let members: Vec<scim::Member> = ids.iter().map(|u| scim::Member::new(u.to_string())).collect();
    let doc = scim::GroupDocument::from_request(json!({"displayName": "Everyone"})).unwrap().0;
    let group = store.create_group(&tenant, doc, members).await.unwrap();
    (group.id.to_string(), ids.iter().map(Uuid::to_string).collect())
}

/// What the noisy tenant is answered refused by its cap on requests in flight, as counted apart
/// from its other answers (by status).
pub const CAPPED: &str = "429 in flight";

/// The noisy tenant's loop, until `stop`: its answers, counted by status ([`CAPPED`] apart).
pub async fn make_noise(
    okta: &Okta,
    group: &str,
    members: &[String],
    noise: Noise,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> BTreeMap<String, usize> {
    let members: Arc<Vec<String>> = Arc::new(members.to_vec());
    let mut tasks = Vec::new();
    for worker in 0..noise.workers {
        let (okta, group, members, stop) = (okta.clone(), group.to_owned(), members.clone(), stop.clone());
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            let mut round = worker;
            while !stop.load(Ordering::Relaxed) {
                let reply = noisy_request(&okta, &group, &members, round).await;
                let capped = reply.status == 429
                    && reply.body["detail"].as_str().is_some_and(|d| d.contains("in progress at once"));
                let status = if capped { CAPPED.to_owned() } else { reply.status.to_string() };
                answered.fetch_add(1, Ordering::Relaxed);
                *statuses.entry(status).or_insert(0) += 1;
                round += 1;
            }
            statuses
        }));
    }
    let mut all = BTreeMap::new();
    for t in tasks {
        for (s, n) in t.await.unwrap() {
            *all.entry(s).or_insert(0) += n;
        }
    }
    all
}

/// One of the noisy tenant's expensive requests, in turn.
async fn noisy_request(okta: &Okta, group: &str, members: &[String], round: usize) -> crate::Reply {
    const COST_CENTER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter";
    match round % 5 {
        0 => okta.get(&format!("/Users?filter={COST_CENTER}%20co%20%22zz{round}%22")).await,
        1 => okta.get("/Users?filter=name.familyName%20co%20%22User%201%22&count=1000").await,
        2 => okta.get("/Groups?startIndex=1&count=1000").await,
        3 => okta.get(&format!("/Groups/{group}")).await,
        _ => {
            // 1,000 operations: 500 members out and back in, one operation each.
            let half = &members[..members.len().min(500)];
            let mut ops: Vec<Value> =
                half.iter().map(|m| json!({"op": "remove", "path": format!("members[value eq \"{m}\"]")})).collect();
            ops.extend(half.iter().map(|m| json!({"op": "add", "path": "members", "value": [{"value": m}]})));
            let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
            okta.patch(&format!("/Groups/{group}"), body).await
        }
    }
}

/// The scenario: the quiet tenant's flow alone, then beside the noise (which starts first: the
/// quiet flow begins once every noisy worker has had two answers). Returns (alone, beside the
/// noise, the noisy tenant's statuses).
pub async fn run(
    quiet: &Okta,
    noisy: &Okta,
    group: &str,
    members: &[String],
    noise: Noise,
    users: usize,
) -> (Flow, Flow, BTreeMap<String, usize>) {
    let run = &Uuid::new_v4().simple().to_string()[..8];
    let alone = okta_user_flow(quiet, &format!("alone{run}"), users, 2).await;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let noise_task = {
        let (noisy, group, members) = (noisy.clone(), group.to_owned(), members.to_vec());
        let (stop, answered) = (stop.clone(), answered.clone());
        tokio::spawn(async move { make_noise(&noisy, &group, &members, noise, stop, answered).await })
    };
    crate::poll_for(Duration::from_secs(120), "the noisy tenant's workers to be answered", || {
        let answered = answered.clone();
        async move { (answered.load(Ordering::Relaxed) >= 2 * noise.workers).then_some(()) }
    })
    .await;
    let beside = okta_user_flow(quiet, &format!("noisy{run}"), users, 2).await;
    stop.store(true, Ordering::Relaxed);
    let noisy_statuses = noise_task.await.unwrap();
    (alone, beside, noisy_statuses)
}
