//! `import`: one tenant's Okta import of `BENCH_IMPORT_USERS` (100,000) users (per user a
//! `userName eq` lookup, then a create; 10 requests in flight, Okta's pace; a 429 retried after
//! its `Retry-After` as Okta does) beside `BENCH_IMPORT_TENANTS` (100) other tenants, each running
//! Okta's user flow (lookup, create, read, replace, deactivate) open-loop, one flow every
//! `BENCH_IMPORT_FLOW_INTERVAL_MS` (2,000). The other tenants' latencies alone (for
//! `BENCH_IMPORT_WINDOW_SECONDS`, 20) and beside the whole import: the import must not make them
//! wait more than twice as long at the p99. The deployment's default fairness limits, as in
//! `noisy`; the rate limit stays out of the way (at its default of 50 a second the import alone
//! would take over half an hour).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::noisy::Flow;
use e2e::processes::ProcessStack;
use serde_json::{Value, json};

use super::{FAIRNESS, analyze_stack, env_u64, fail, generator_share, measured, own_cpu, services_env, stack_settings};

/// Okta's requests in flight for one import.
const IN_FLIGHT: usize = 10;
/// Users seeded into each of the other tenants before the measurements.
const NEIGHBOUR_USERS: u64 = 100;
/// Okta's retries of a refused request, doubling the wait each time.
const RETRIES: u32 = 10;

/// The import's answers.
#[derive(Debug, Default)]
struct Imported {
    users: usize,
    /// Latencies (ms) of the requests that succeeded.
    latencies: Vec<f64>,
    /// 429s with `Retry-After`, each retried after it.
    refusals: usize,
    /// Requests that failed (other statuses, no answer, or refused more than Okta retries).
    failed: usize,
    failures: Vec<String>,
}

impl Imported {
    fn failure(&mut self, what: String) {
        self.failed += 1;
        if self.failures.len() < 5 {
            self.failures.push(what);
        }
    }

    fn merge(&mut self, other: Imported) {
        self.users += other.users;
        self.latencies.extend(other.latencies);
        self.refusals += other.refusals;
        self.failed += other.failed;
        self.failures.extend(other.failures.into_iter().take(5usize.saturating_sub(self.failures.len())));
    }
}

/// Sends a request as Okta does (its headers), retrying a 429 after its `Retry-After` (the wait
/// doubled on each further refusal, `RETRIES` times); `Some(body)` when it succeeded.
async fn send(
    okta: &e2e::Okta,
    t: &mut Imported,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Option<Value> {
    let mut wait = Duration::ZERO;
    for _ in 0..=RETRIES {
        let mut request = okta
            .http
            .request(method.clone(), format!("{}{path}", okta.base))
            .header("Authorization", &okta.auth)
            .header("Accept", "application/scim+json")
            .header("User-Agent", "Okta SCIM Client 1.0.0");
        if let Some(b) = body {
            request = request.header("Content-Type", "application/scim+json; charset=utf-8").body(b.to_string());
        }
        let started = Instant::now();
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                t.failure(format!("{method} {path}: {e}"));
                return None;
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        let bytes = response.bytes().await.unwrap_or_default();
        match (status, retry_after) {
            (200..=299, _) => {
                t.latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                return Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
            }
            (429, Some(secs)) => {
                t.refusals += 1;
                wait = (wait * 2).max(Duration::from_secs(secs));
                tokio::time::sleep(wait).await;
            }
            _ => {
                let text = String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>();
                t.failure(format!("{method} {path}: {status} {text}"));
                return None;
            }
        }
    }
    t.failure(format!("{method} {path}: still refused after {RETRIES} retries"));
    None
}

/// The import: `users` users, `IN_FLIGHT` at a time; each a `userName eq` lookup (which must find
/// none) and a create.
async fn import(okta: &e2e::Okta, users: usize) -> Imported {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (okta, next) = (okta.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut t = Imported::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return t;
                }
                let name = format!("imported{i}@importco.example");
                let path = format!(
                    "/Users?filter={}&startIndex=1&count=100",
                    super::bigtenant::encode(&format!("userName eq \"{name}\""))
                );
                let Some(found) = send(&okta, &mut t, reqwest::Method::GET, &path, None).await else { continue };
                if found["totalResults"] != json!(0) {
                    t.failure(format!("lookup of {name} before its import: totalResults {}", found["totalResults"]));
                    continue;
                }
                let mut user = e2e::okta_user(&name);
                user["externalId"] = json!(format!("00u{i:017}"));
                if send(&okta, &mut t, reqwest::Method::POST, "/Users", Some(&user)).await.is_some() {
                    t.users += 1;
                }
            }
        }));
    }
    let mut all = Imported::default();
    for w in workers {
        match w.await {
            Ok(t) => all.merge(t),
            Err(e) => all.failure(format!("an import worker panicked: {e}")),
        }
    }
    all
}

/// The other tenants' load: each tenant starts Okta's user flow every `interval` (open loop: a
/// flow starts on time whether or not the previous one has finished; the tenants' starts are
/// spread over the interval) until `stop`. Returns every request's latency and status.
async fn neighbours(tenants: &[e2e::Okta], interval: Duration, stop: Arc<AtomicBool>, run: &str) -> Flow {
    let n = tenants.len().max(1) as u32;
    let start = tokio::time::Instant::now();
    let mut tickers = Vec::new();
    for (i, okta) in tenants.iter().enumerate() {
        let (okta, stop, run) = (okta.clone(), stop.clone(), run.to_owned());
        tickers.push(tokio::spawn(async move {
            let mut at = start + interval * u32::try_from(i).unwrap() / n;
            let mut flows = Vec::new();
            let mut k = 0;
            loop {
                tokio::time::sleep_until(at).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (okta, name) = (okta.clone(), format!("{run}-{k}@neighbour.example"));
                flows.push(tokio::spawn(async move {
                    let mut flow = Flow::default();
                    e2e::noisy::one_user(&okta, &name, &mut flow).await;
                    flow
                }));
                k += 1;
                at += interval;
            }
            let mut flow = Flow::default();
            for f in flows {
                match f.await {
                    Ok(part) => merge(&mut flow, part),
                    Err(e) => flow.failures.push(format!("a flow panicked: {e}")),
                }
            }
            flow
        }));
    }
    let mut flow = Flow::default();
    for t in tickers {
        merge(&mut flow, t.await.unwrap());
    }
    flow
}

fn merge(into: &mut Flow, part: Flow) {
    into.latencies.extend(part.latencies);
    for (s, n) in part.statuses {
        *into.statuses.entry(s).or_default() += n;
    }
    into.failures.extend(part.failures);
}

/// A stand-in for autovacuum while the import grows the tables: `ANALYZE` every 30 s until `stop`.
fn autovacuum(stack: &ProcessStack, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let urls = [stack.directory_db_url.clone(), stack.notification_db_url.clone()];
    tokio::spawn(async move {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last.elapsed() >= Duration::from_secs(30) {
                super::analyze(&[&urls[0], &urls[1]]).await;
                last = Instant::now();
            }
        }
    })
}

pub async fn import_scenario() -> Value {
    let users = usize::try_from(env_u64("BENCH_IMPORT_USERS", 100_000)).unwrap();
    let tenant_count = env_u64("BENCH_IMPORT_TENANTS", 100);
    let interval = Duration::from_millis(env_u64("BENCH_IMPORT_FLOW_INTERVAL_MS", 2000));
    let window = Duration::from_secs(env_u64("BENCH_IMPORT_WINDOW_SECONDS", 20));
    // The deployment's defaults for the fairness limits (the rate limit stays out of the way).
    let mut settings: Vec<_> = stack_settings().into_iter().filter(|(k, _)| !FAIRNESS.contains(k)).collect();
    settings.extend(services_env());
    let stack = ProcessStack::start(&settings).await;
    let store = stack.store();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    let okta = |subdomain: &str, key: &str| e2e::Okta {
        base: format!("http://{}/scim/v2", stack.gateway_addr),
        auth: e2e::basic(subdomain, key),
        http: http.clone(),
    };
    let mut tenants = Vec::new();
    for i in 0..tenant_count {
        let subdomain = format!("tenant-{i}");
        let (_, key) = store.create_tenant(&subdomain, &subdomain).await.unwrap();
        store.seed("neighbour", 0, 0, Some((&subdomain, NEIGHBOUR_USERS))).await.unwrap();
        // Every flow deactivates the user it created: a share that lets that pass (as `scim`).
        let update = user_directory::store::TenantUpdate { brake_share: Some(1.0), ..Default::default() };
        store.update_tenant(&subdomain, &update).await.unwrap();
        tenants.push(okta(&subdomain, &key.key));
    }
    let (_, key) = store.create_tenant("importco", "Import Co").await.unwrap();
    store.close().await;
    let importer = okta("importco", &key.key);
    // A warm-up, not counted: each tenant's first flow (connections, the services' caches).
    let mut warm = Vec::new();
    for (i, t) in tenants.iter().enumerate() {
        let t = t.clone();
        warm.push(tokio::spawn(async move {
            let mut flow = Flow::default();
            e2e::noisy::one_user(&t, &format!("warmup-{i}@neighbour.example"), &mut flow).await;
            flow
        }));
    }
    for w in warm {
        let flow = w.await.unwrap();
        if !flow.all_succeeded() {
            fail(format!("import: a warm-up flow failed: {:?} {:?}", flow.statuses, flow.failures));
        }
    }
    analyze_stack(&stack).await;

    // Alone, for the window.
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let alone = neighbours(&tenants, interval, stop, "alone").await;
    timer.await.unwrap();
    analyze_stack(&stack).await;

    // Beside the whole import.
    let stop = Arc::new(AtomicBool::new(false));
    let vacuum = autovacuum(&stack, stop.clone());
    let beside_task = {
        let (tenants, stop) = (tenants.clone(), stop.clone());
        tokio::spawn(async move { neighbours(&tenants, interval, stop, "beside").await })
    };
    let started = Instant::now();
    let own_before = own_cpu();
    let imported = import(&importer, users).await;
    let import_secs = started.elapsed().as_secs_f64();
    let generator = generator_share(own_before, own_cpu());
    stop.store(true, Ordering::Relaxed);
    let beside = beside_task.await.unwrap();
    vacuum.await.unwrap();
    analyze_stack(&stack).await;

    let (a, b) = (alone.summary(), beside.summary());
    let p = |v: &Value, q: &str| v[q].as_f64().unwrap_or(0.0);
    let ratio = p(&b, "p99_ms") / p(&a, "p99_ms").max(0.001);
    println!(
        "\nimport: {} of {users} users imported in {import_secs:.0} s ({:.0} users/s), {IN_FLIGHT} requests in flight",
        imported.users,
        imported.users as f64 / import_secs.max(0.001)
    );
    let mut sorted = imported.latencies.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "import: its requests p50 {:.1} ms, p99 {:.1} ms; refused with Retry-After (429) and retried: {}; failed: {}",
        e2e::load::percentile(&sorted, 0.5),
        e2e::load::percentile(&sorted, 0.99),
        imported.refusals,
        imported.failed
    );
    println!(
        "import: {tenant_count} other tenants, Okta's user flow each every {:.1} s (5 requests), alone for {} s, then beside the whole import",
        interval.as_secs_f64(),
        window.as_secs()
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "", "alone", "beside", "x");
    for q in ["p50_ms", "p99_ms"] {
        println!("{q:<22} {:>10.1} {:>10.1} {:>10.2}", p(&a, q), p(&b, q), p(&b, q) / p(&a, q).max(0.001));
    }
    println!(
        "requests               {:>10} {:>10}",
        a["requests"].as_u64().unwrap_or(0),
        b["requests"].as_u64().unwrap_or(0)
    );
    println!("load generator: {:.0}% of the machine during the import", generator * 100.0);
    for (phase, flow) in [("alone", &alone), ("beside the import", &beside)] {
        if !flow.all_succeeded() || !flow.failures.is_empty() {
            fail(format!("import: another tenant's request failed {phase}: {:?} {:?}", flow.statuses, flow.failures));
        }
    }
    if imported.failed > 0 || imported.users < users {
        fail(format!(
            "import: {} of {users} users imported, {} requests failed: {:?}",
            imported.users, imported.failed, imported.failures
        ));
    }
    if alone.latencies.is_empty() || beside.latencies.is_empty() {
        fail("import: no neighbour request was measured".to_owned());
    } else {
        measured("import_neighbours_p99_ratio", ratio);
    }
    json!({
        "import_users": users, "imported": imported.users, "in_flight": IN_FLIGHT,
        "import_seconds": import_secs, "import_users_per_second": imported.users as f64 / import_secs.max(0.001),
        "import_p50_ms": e2e::load::round(e2e::load::percentile(&sorted, 0.5)),
        "import_p99_ms": e2e::load::round(e2e::load::percentile(&sorted, 0.99)),
        "import_refusals_retried": imported.refusals, "import_failed": imported.failed,
        "tenants": tenant_count, "flow_interval_ms": interval.as_millis() as u64, "alone_seconds": window.as_secs(),
        "alone": a, "beside": b, "p99_ratio_beside_over_alone": (ratio * 100.0).round() / 100.0,
        "generator_cpu_share": (generator * 1000.0).round() / 1000.0,
    })
}
