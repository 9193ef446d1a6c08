//! The load generator of `make bench`: closed-loop clients (each sends its next request when the
//! previous one is answered) against a gateway, per request type, at a given concurrency; and the
//! machine's ceiling for the same work measured with `pgbench` on the same schema.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Latencies (ms) of the successful requests and counts of the failed ones, per request type,
/// over a measured interval. Only successes count as throughput: a failed request is often
/// cheaper than a served one (a refusal, an early error), so counting it would flatter the rate.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Successful requests' latencies.
    pub latencies: BTreeMap<&'static str, Vec<f64>>,
    /// Failed requests (an error status, or no answer).
    pub errors: BTreeMap<&'static str, usize>,
    /// Okta flows cut short by a failed create (their read, replace and deactivation not sent).
    pub flows_cut: usize,
    pub seconds: f64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (k, mut v) in other.latencies {
            self.latencies.entry(k).or_default().append(&mut v);
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.flows_cut += other.flows_cut;
    }

    /// Successful requests of every type together.
    pub fn successes(&self) -> usize {
        self.latencies.values().map(Vec::len).sum()
    }

    /// Failed requests of every type together.
    pub fn failures(&self) -> usize {
        self.errors.values().sum()
    }

    /// Successful requests per second of every request type together (failures are not
    /// throughput).
    pub fn rate(&self) -> f64 {
        self.successes() as f64 / self.seconds
    }

    /// Every successful request's latency, sorted.
    pub fn all_latencies(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.latencies.values().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// `{type: {rps, p50, p95, p99, errors}}` (rps and percentiles of the successful requests)
    /// and the totals.
    pub fn summary(&mut self) -> Value {
        let mut out = serde_json::Map::new();
        let kinds: std::collections::BTreeSet<&'static str> =
            self.latencies.keys().chain(self.errors.keys()).copied().collect();
        for kind in kinds {
            let l = self.latencies.entry(kind).or_default();
            l.sort_by(f64::total_cmp);
            let errors = self.errors.get(kind).copied().unwrap_or(0);
            out.insert(
                kind.to_owned(),
                json!({
                    "rps": round(l.len() as f64 / self.seconds),
                    "successes": l.len(),
                    "p50_ms": round(percentile(l, 0.50)),
                    "p95_ms": round(percentile(l, 0.95)),
                    "p99_ms": round(percentile(l, 0.99)),
                    "errors": errors,
                }),
            );
        }
        json!({"rps": round(self.rate()), "successes": self.successes(), "errors": self.failures(),
               "flows_cut_short": self.flows_cut, "types": out})
    }
}

/// Shows the first few errors of a run, so that a count of errors can be explained.
fn report_error(kind: &str, what: &str) {
    static SHOWN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if SHOWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 10 {
        eprintln!("error ({kind}): {what}");
    }
}

pub fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A client of one tenant on one gateway.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub auth: String,
}

impl Client {
    /// Sends one request, timing it; `Some(body)` when it succeeded.
    async fn send(
        &self,
        tally: &mut Tally,
        kind: &'static str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Accept", "application/scim+json");
        if let Some(b) = body {
            request = request.header("Content-Type", "application/scim+json").body(b.to_string());
        }
        let started = Instant::now();
        let outcome = match request.send().await {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                report_error(kind, &format!("{status}: {}", body.chars().take(200).collect::<String>()));
                None
            }
            Err(e) => {
                report_error(kind, &e.to_string());
                None
            }
        };
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Some(bytes) => {
                tally.latencies.entry(kind).or_default().push(ms);
                Some(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
            }
            None => {
                *tally.errors.entry(kind).or_default() += 1;
                None
            }
        }
    }
}

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Okta's provisioning of one user: filter, create, get, put, deactivate.
    OktaMix,
    /// GET /Users/{id} of existing users.
    GetById,
    /// `userName eq` lookups of existing users.
    Filter,
    /// Pages of 100 through the list.
    ListPage,
    /// Creates only (the write the pgbench insert ceiling has the shape of).
    Create,
    /// `externalId eq` lookups of existing users (Entra's).
    ExternalIdEq,
    /// `emails[value eq ...]` lookups of existing users.
    EmailEq,
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Load", "familyName": "Test"},
        "emails": [{"primary": true, "value": name, "type": "work"}],
        "locale": "en-US",
        "externalId": format!("ext-{name}"),
        "active": true
    })
}

fn filter_path(name: &str) -> String {
    format!("/Users?filter=userName%20eq%20%22{}%22&startIndex=1&count=100", name.replace('@', "%40"))
}

/// Creates `n` users (for the read-only work), `concurrency` at a time; returns the ids and names
/// of those created (fewer than `n` when some creates failed: the caller counts that as a failure).
pub async fn seed(client: &Client, prefix: &str, n: usize, concurrency: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(concurrency) {
        let creates = chunk.iter().map(|i| {
            let client = client.clone();
            let name = format!("{prefix}{i}@acme.com");
            async move {
                let mut t = Tally::default();
                let created = client.send(&mut t, "seed", reqwest::Method::POST, "/Users", Some(&user(&name))).await;
                created.and_then(|c| c["id"].as_str().map(|id| (id.to_owned(), name)))
            }
        });
        out.extend(futures::future::join_all(creates).await.into_iter().flatten());
    }
    out
}

/// Runs `concurrency` closed-loop clients doing `work` for `duration` (after a short warm-up that
/// is not counted).
pub async fn run(
    client: &Client,
    work: Work,
    concurrency: usize,
    duration: Duration,
    existing: Arc<Vec<(String, String)>>,
    run_id: &str,
) -> Tally {
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let (count_from, stop_at) = (start + warmup, start + warmup + duration);
    let mut clients = Vec::new();
    for c in 0..concurrency {
        let (client, existing, run_id) = (client.clone(), existing.clone(), run_id.to_owned());
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i: usize = 0;
            while Instant::now() < stop_at {
                let counted = Instant::now() >= count_from;
                let mut t = Tally::default();
                i += 1;
                let pick = &existing[(c * 7919 + i * 104_729) % existing.len().max(1)];
                match work {
                    Work::OktaMix => {
                        let name = format!("{run_id}-{c}-{i}@acme.com");
                        client.send(&mut t, "filter", reqwest::Method::GET, &filter_path(&name), None).await;
                        let created =
                            client.send(&mut t, "create", reqwest::Method::POST, "/Users", Some(&user(&name))).await;
                        if let Some(id) = created.as_ref().and_then(|c| c["id"].as_str()) {
                            let path = format!("/Users/{id}");
                            client.send(&mut t, "get", reqwest::Method::GET, &path, None).await;
                            let mut changed = user(&name);
                            changed["name"]["givenName"] = json!("Changed");
                            client.send(&mut t, "put", reqwest::Method::PUT, &path, Some(&changed)).await;
                            let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                "Operations": [{"op": "replace", "value": {"active": false}}]});
                            client.send(&mut t, "deactivate", reqwest::Method::PATCH, &path, Some(&deactivate)).await;
                        } else {
                            // The create failed (counted as its error): the rest of this user's
                            // flow is not sent, and the cut is counted, not hidden.
                            t.flows_cut += 1;
                        }
                    }
                    Work::Create => {
                        let name = format!("{run_id}-{c}-{i}@acme.com");
                        client.send(&mut t, "create_only", reqwest::Method::POST, "/Users", Some(&user(&name))).await;
                    }
                    Work::ExternalIdEq => {
                        let path = format!("/Users?filter=externalId%20eq%20%22ext-{}%22", pick.1.replace('@', "%40"));
                        client.send(&mut t, "external_id_eq", reqwest::Method::GET, &path, None).await;
                    }
                    Work::EmailEq => {
                        let path =
                            format!("/Users?filter=emails%5Bvalue%20eq%20%22{}%22%5D", pick.1.replace('@', "%40"));
                        client.send(&mut t, "email_eq", reqwest::Method::GET, &path, None).await;
                    }
                    Work::GetById => {
                        client
                            .send(&mut t, "get_by_id", reqwest::Method::GET, &format!("/Users/{}", pick.0), None)
                            .await;
                    }
                    Work::Filter => {
                        client.send(&mut t, "filter_eq", reqwest::Method::GET, &filter_path(&pick.1), None).await;
                    }
                    Work::ListPage => {
                        let start = 1 + (i * 100) % existing.len().max(1);
                        let path = format!("/Users?startIndex={start}&count=100");
                        client.send(&mut t, "list_page", reqwest::Method::GET, &path, None).await;
                    }
                }
                if counted {
                    tally.merge(t);
                }
            }
            tally
        }));
    }
    let mut total = Tally { seconds: duration.as_secs_f64(), ..Tally::default() };
    for c in clients {
        total.merge(c.await.unwrap_or_default());
    }
    total
}

/// Runs `concurrency` closed-loop clients for `duration` (after a 0.5 s warm-up that is not
/// counted), each sending GETs of `paths` in turn (`kind` in the tally): lookups of values that
/// exist, so an answer that does not find exactly one resource (`totalResults` 1) counts as an
/// error, as a failed request does.
pub async fn run_lookups(
    client: &Client,
    kind: &'static str,
    paths: Arc<Vec<String>>,
    concurrency: usize,
    duration: Duration,
) -> Tally {
    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let (count_from, stop_at) = (start + warmup, start + warmup + duration);
    let mut clients = Vec::new();
    for c in 0..concurrency {
        let (client, paths) = (client.clone(), paths.clone());
        clients.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut i = c * 7919;
            while Instant::now() < stop_at {
                let counted = Instant::now() >= count_from;
                let mut t = Tally::default();
                i += 1;
                let path = &paths[i % paths.len().max(1)];
                let found = client.send(&mut t, kind, reqwest::Method::GET, path, None).await;
                if let Some(body) = found
                    && body["totalResults"] != json!(1)
                {
                    // Answered, but not with the one resource that exists: not a success.
                    report_error(kind, &format!("{path}: totalResults {}", body["totalResults"]));
                    t.latencies.entry(kind).or_default().pop();
                    *t.errors.entry(kind).or_default() += 1;
                }
                if counted {
                    tally.merge(t);
                }
            }
            tally
        }));
    }
    let mut total = Tally { seconds: duration.as_secs_f64(), ..Tally::default() };
    for c in clients {
        total.merge(c.await.unwrap_or_default());
    }
    total
}

/// The pgbench binary: on the PATH, or in the PostgreSQL installation.
pub fn pgbench() -> Option<std::path::PathBuf> {
    let on_path = std::process::Command::new("pgbench").arg("--version").output().is_ok();
    if on_path {
        return Some("pgbench".into());
    }
    let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|d| d.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// Runs pgbench on `script` at `concurrency` clients (on `threads` threads), with `args` and the
/// script's `vars`, in a directory of its own (the script, and the transaction logs `-l` writes
/// there as `pgbench_log.*`), which `read` sees before it is removed. `None` without pgbench.
fn run_pgbench<T>(
    url: &str,
    script: &str,
    (concurrency, threads): (usize, usize),
    args: &[&str],
    vars: &[(&str, &str)],
    read: impl FnOnce(&std::process::Output, &std::path::Path) -> T,
) -> Option<T> {
    let bin = pgbench()?;
    let dir = std::env::temp_dir().join(format!("pgbench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a directory for pgbench");
    let file = dir.join("script.sql");
    std::fs::write(&file, script).expect("write the pgbench script");
    let mut command = std::process::Command::new(bin);
    command.args(["-n", "-M", "prepared", "-c", &concurrency.to_string(), "-j", &threads.to_string()]);
    command.args(args).arg("-f").arg(&file).current_dir(&dir);
    for (k, v) in vars {
        command.arg("-D").arg(format!("{k}={v}"));
    }
    let output = command.arg(url).output().expect("run pgbench");
    if !output.status.success() {
        eprintln!("pgbench failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let result = read(&output, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    Some(result)
}

/// Transactions per second of a pgbench script at a concurrency, for `seconds`.
pub fn pgbench_tps(url: &str, script: &str, concurrency: usize, seconds: u64, vars: &[(&str, &str)]) -> f64 {
    let threads = concurrency.min(2);
    run_pgbench(url, script, (concurrency, threads), &["-T", &seconds.to_string()], vars, |output, _| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0)
    })
    .unwrap_or(0.0)
}

/// Our write's shape: a user row and its outbox row, in one transaction.
pub const PGBENCH_INSERT: &str = r"\set n random(1, 1000000000000)
BEGIN;
INSERT INTO users (tenant_id, id, user_name, user_name_folded, external_id, active, given_name, family_name, email, locale, source, version, created_at, updated_at, document)
  VALUES (:tenant, gen_random_uuid(), 'pgb' || :n || '@acme.com', 'pgb' || :n || '@acme.com', 'ext-' || :n, true, 'Load', 'Test', 'pgb' || :n || '@acme.com', 'en-US', 'scim', 1, now(), now(), '{}'::jsonb || jsonb_build_object('userName', 'pgb' || :n || '@acme.com', 'name', jsonb_build_object('givenName', 'Load', 'familyName', 'Test')))
  ON CONFLICT DO NOTHING;
INSERT INTO outbox (event_id, tenant_id, subject, payload) VALUES (gen_random_uuid(), :tenant, 'provisioning.v1.acme.user.created', '\x0a0b'::bytea);
COMMIT;
";

/// Our lookup's shape: one user by tenant and folded userName.
pub const PGBENCH_SELECT: &str = r"\set i random(0, :seeded - 1)
SELECT id, version, created_at, updated_at, source, active, document FROM users WHERE tenant_id = :tenant AND user_name_folded = :prefix::text || :i || '@acme.com';
";

/// The latency of each transaction (ms, sorted) when pgbench runs `script` at a fixed `rate` a
/// second over `concurrency` clients: the machine's own commit latency at a rate we are measured
/// at. Latencies include the time a transaction waited for its turn behind a slow one (`-R`).
pub fn pgbench_latencies(
    url: &str,
    script: &str,
    concurrency: usize,
    rate: u64,
    seconds: u64,
    vars: &[(&str, &str)],
) -> Vec<f64> {
    let args = ["-R", &rate.to_string(), "-T", &seconds.to_string(), "-l"];
    let logged = run_pgbench(url, script, (concurrency, 1), &args, vars, |_, dir| {
        // Each log line: client, transaction, latency in µs, script, epoch seconds, µs.
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("pgbench_log."))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .flat_map(|text| {
                text.lines().filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()).collect::<Vec<_>>()
            })
            .map(|us| us / 1000.0)
            .collect::<Vec<f64>>()
    });
    let mut latencies = logged.unwrap_or_default();
    latencies.sort_by(f64::total_cmp);
    latencies
}
