//! Fault tests' tools: PostgreSQL and nats-server instances private to one test (started on free
//! ports, so stopping or killing them disturbs nothing else), a bounded SCIM load that behaves as
//! Okta does when a request fails (it retries), the ledger of what that load was told, and the
//! check of every promise against it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::processes::{ProcessStack, Servers, free_addr};
use crate::{StreamEvent, poll, poll_for};

/// A fresh scratch directory under the system's temporary directory (its owner removes it).
pub fn scratch(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scimtest_{kind}_{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Waits (up to 30 s) until something accepts connections on `port`.
pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A PostgreSQL server of the test's own: its data directory, its port.
pub struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// Creates a cluster (`initdb`) and starts it.
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server binaries (Debian's postgresql package; `make test` installs it)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max_by_key(|p| p.to_string_lossy().split('/').nth(4).and_then(|v| v.parse::<u32>().ok()))
            .expect("an initdb under /usr/lib/postgresql");
        let pg = PrivatePostgres { bin, data: scratch("pg"), port: free_addr().port() };
        if is_root() {
            // initdb and postgres refuse to run as root: the postgres account owns the cluster.
            assert!(Command::new("chown").arg("postgres:postgres").arg(&pg.data).status().unwrap().success());
        }
        let data = pg.data.to_string_lossy().into_owned();
        pg.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]);
        pg.start_server();
        pg
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn start_server(&self) {
        let data = self.data.to_string_lossy().into_owned();
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -k {data}", self.port);
        let log = format!("{data}/server.log");
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-o", &options, "start"]);
    }

    /// Stops the server (fast shutdown: clients are disconnected, as in a restart by an operator).
    pub fn stop_server(&self) {
        let data = self.data.to_string_lossy().into_owned();
        self.run("pg_ctl", &["-D", &data, "-w", "-m", "fast", "stop"]);
    }

    /// Crashes the server: SIGKILL to the postmaster (as the OOM killer or a node's death would
    /// do it: no shutdown checkpoint, nothing flushed beyond what each commit already flushed),
    /// then waits until every one of its children is gone too (each backend and auxiliary
    /// process exits once it notices its postmaster died; none may still hold the shared memory
    /// when the server starts again). [`PrivatePostgres::start_server`] then runs WAL crash
    /// recovery.
    pub fn crash_server(&self) {
        let pid_file = self.data.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).expect("postmaster.pid (the server runs)");
        let pid: u32 = text.lines().next().and_then(|l| l.trim().parse().ok()).expect("the postmaster's pid");
        let postmaster = Proc::of(pid).expect("the postmaster runs");
        let mut family = Proc::children_of(pid);
        family.push(postmaster);
        assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success(), "kill -KILL {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let alive: Vec<&Proc> = family.iter().filter(|p| p.alive()).collect();
            if alive.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the killed postmaster's processes are still there: {alive:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log (`<data>/server.log`), every start's appended.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    pub fn servers_with(&self, nats: &PrivateNats) -> Servers {
        Servers {
            postgres_admin_url: format!("postgres://postgres@127.0.0.1:{}/postgres", self.port),
            nats_url: nats.url(),
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().into_owned();
        let _ = std::panic::catch_unwind(|| self.run("pg_ctl", &["-D", &data, "-w", "-m", "immediate", "stop"]));
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A process, told from a later one with the same pid by its start time.
#[derive(Debug)]
struct Proc {
    pid: u32,
    started: String,
}

impl Proc {
    /// Its parent's pid, state and start time (`/proc/<pid>/stat`), when it exists.
    fn stat(pid: u32) -> Option<(u32, char, String)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": the command may hold spaces and parentheses.
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state (field 3 of the whole line), ppid (4), ..., starttime (22).
        Some((fields.get(1)?.parse().ok()?, fields.first()?.chars().next()?, (*fields.get(19)?).to_owned()))
    }

    fn of(pid: u32) -> Option<Proc> {
        Proc::stat(pid).map(|(_, _, started)| Proc { pid, started })
    }

    fn children_of(parent: u32) -> Vec<Proc> {
        std::fs::read_dir("/proc")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                    .filter_map(|pid| match Proc::stat(pid) {
                        Some((ppid, _, started)) if ppid == parent => Some(Proc { pid, started }),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether it still runs (a zombie, exited but not yet reaped, does not).
    fn alive(&self) -> bool {
        Proc::stat(self.pid).is_some_and(|(_, state, started)| started == self.started && state != 'Z' && state != 'X')
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A nats-server with JetStream of the test's own; its storage survives a stop.
pub struct PrivateNats {
    store: PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
    /// The server's configuration file, when it has one.
    config: Option<PathBuf>,
}

/// The services' NATS passwords, as `deploy/nats/render-auth.sh` made them.
#[derive(Debug, Clone)]
pub struct NatsPasswords {
    pub user_directory: String,
    pub notification: String,
    pub scim_gateway: String,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let mut nats = PrivateNats { store: scratch("nats"), port: free_addr().port(), child: None, config: None };
        nats.start_server();
        nats
    }

    /// A server with the configuration the project ships (`deploy/nats/nats-server.conf` and
    /// the services' users from `deploy/nats/auth.conf.template`), rendered by the shipped
    /// script for this stream, subject prefix and consumer, with fresh passwords.
    pub fn start_secured(stream: &str, prefix: &str, consumer: &str) -> (PrivateNats, NatsPasswords) {
        PrivateNats::start_secured_with(stream, prefix, consumer, "")
    }

    /// [`PrivateNats::start_secured`], with `extra` appended to the server's configuration (a
    /// `tls { ... }` block, say).
    pub fn start_secured_with(stream: &str, prefix: &str, consumer: &str, extra: &str) -> (PrivateNats, NatsPasswords) {
        let store = scratch("nats");
        let conf = store.join("conf");
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats");
        let status = Command::new("bash")
            .arg(shipped.join("render-auth.sh"))
            .arg(&conf)
            .env("NATS_STREAM", stream)
            .env("NATS_SUBJECT_PREFIX", prefix)
            .env("NOTIFICATION_CONSUMER", consumer)
            .env("BCRYPT_COST", "10")
            .status()
            .expect("run deploy/nats/render-auth.sh");
        assert!(status.success(), "deploy/nats/render-auth.sh failed");
        let server_conf = std::fs::read_to_string(shipped.join("nats-server.conf")).expect("read nats-server.conf");
        std::fs::write(conf.join("nats-server.conf"), format!("{server_conf}\n{extra}\n"))
            .expect("write nats-server.conf");
        let read = |service: &str| std::fs::read_to_string(conf.join(format!("{service}.password"))).unwrap();
        let passwords = NatsPasswords {
            user_directory: read("user-directory"),
            notification: read("notification"),
            scim_gateway: read("scim-gateway"),
        };
        let mut nats =
            PrivateNats { store, port: free_addr().port(), child: None, config: Some(conf.join("nats-server.conf")) };
        nats.start_server();
        (nats, passwords)
    }

    /// The server's URL with a user's credentials in it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port and storage).
    pub fn start_server(&mut self) {
        let mut command = Command::new(nats_server_binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.join("js"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        wait_port(self.port, "nats-server");
    }

    /// Stops the server (SIGTERM, as a restart would: it shuts down cleanly) and waits for it
    /// to go.
    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL, as a crash or the OOM killer would: nothing is flushed or
    /// closed beyond what it had already written) and waits for it to go.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL nats-server");
            let _ = child.wait();
        }
    }
}

/// The nats-server executable: Debian's (`/usr/sbin`, `/usr/bin`), a local install's, or the
/// one on the `PATH`.
pub fn nats_server_binary() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server")
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// What the load was told about one user: the state every acknowledged write left.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub id: String,
    pub given_name: Option<String>,
    pub active: bool,
    /// Content was assigned (acknowledged): exactly one `content.assigned` event, and exactly one
    /// email, are owed. An assignment leaves the user's version as it is.
    pub assigned: bool,
    /// The version the acknowledged changes add up to: 1 for the create, one more for each
    /// acknowledged write that changed something. A retried write whose first attempt was
    /// applied (its answer lost) changes nothing the second time, and is counted once.
    pub version: i64,
}

/// A failure the load met (and retried past).
#[derive(Clone, Debug)]
pub struct Failure {
    pub at: Instant,
    pub what: String,
    pub status: Option<u16>,
    /// The SCIM error's body and Retry-After, when the service answered.
    pub body: Value,
    pub retry_after: Option<String>,
}

/// Counters and the ledger of a running load.
pub struct Ledger {
    /// userName -> what the service acknowledged.
    pub users: Mutex<BTreeMap<String, Expected>>,
    pub failures: Mutex<Vec<Failure>>,
    /// Writes answered 2xx, with when.
    pub acknowledged: Mutex<Vec<Instant>>,
    pub requests: AtomicU64,
    /// When the load started.
    pub started: Instant,
    /// The latest disturbance of the notification path the test recorded.
    disturbed: Mutex<Option<Instant>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            users: Mutex::default(),
            failures: Mutex::default(),
            acknowledged: Mutex::default(),
            requests: AtomicU64::default(),
            started: Instant::now(),
            disturbed: Mutex::default(),
        }
    }
}

impl Ledger {
    /// Records that the test disturbed the way to an email at `at` (killed or restarted the
    /// notification service, its database, the broker or the SMTP server): [`verify`] counts
    /// emails only once one ack wait of the notification consumer has passed since the latest
    /// such instant, so that whatever that disturbance leaves to be redelivered has come.
    pub fn disturbed(&self, at: Instant) {
        let mut latest = self.disturbed.lock().unwrap();
        *latest = Some(latest.map_or(at, |l| l.max(at)));
    }

    /// Since when nothing disturbed the way to an email: the latest disturbance recorded, or
    /// the load's start.
    pub fn quiet_since(&self) -> Instant {
        self.disturbed.lock().unwrap().unwrap_or(self.started)
    }

    /// Writes acknowledged within a time window.
    pub fn acknowledged_between(&self, from: Instant, to: Instant) -> usize {
        self.acknowledged.lock().unwrap().iter().filter(|t| **t >= from && **t <= to).count()
    }

    /// Failures within a time window.
    pub fn failures_between(&self, from: Instant, to: Instant) -> Vec<Failure> {
        self.failures.lock().unwrap().iter().filter(|f| f.at >= from && f.at <= to).cloned().collect()
    }
}

/// Okta-like provisioning by a few workers, each user in turn: created (a create that may have
/// been applied though unanswered is retried; its 409 is resolved by looking the user up, as
/// Okta does), renamed, given content (every second user: an email is owed) or deactivated
/// (every third of the others). Every failure is retried until answered; the ledger records only
/// what the service acknowledged.
pub struct Load {
    pub ledger: Arc<Ledger>,
    stop: CancellationToken,
    workers: Vec<JoinHandle<()>>,
}

/// How long a worker keeps retrying one request before the test fails.
const GIVE_UP: Duration = Duration::from_secs(240);

#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    gateway: String,
    auth: String,
}

impl Target {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value, Option<String>), String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.gateway))
            .header("Authorization", &self.auth)
            .header("User-Agent", "Okta SCIM Client 1.0.0")
            .timeout(Duration::from_secs(30));
        if let Some(b) = body {
            request = request.header("Content-Type", "application/scim+json").body(b.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{e}"))?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(std::borrow::ToOwned::to_owned);
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body, retry_after))
    }
}

impl Load {
    /// Starts `workers` workers against the stack's gateway; user names start with `run`.
    pub fn start(stack: &ProcessStack, run: &str, workers: usize) -> Load {
        let target = Target {
            http: reqwest::Client::builder().pool_max_idle_per_host(workers).build().unwrap(),
            gateway: stack.gateway_addr.to_string(),
            auth: stack.auth(),
        };
        let ledger = Arc::new(Ledger::default());
        let stop = CancellationToken::new();
        let workers = (0..workers)
            .map(|w| {
                let (target, ledger, stop, run) = (target.clone(), ledger.clone(), stop.clone(), run.to_owned());
                tokio::spawn(async move {
                    let mut i = 0usize;
                    while !stop.is_cancelled() {
                        provision(&target, &ledger, &format!("{run}-w{w}-{i}@faults.test"), i).await;
                        i += 1;
                    }
                })
            })
            .collect();
        Load { ledger, stop, workers }
    }

    /// Asks the workers to stop after the user each has in hand, and waits for them.
    pub async fn finish(self) -> Arc<Ledger> {
        self.stop.cancel();
        for w in self.workers {
            w.await.expect("a load worker panicked");
        }
        self.ledger
    }

    /// Waits until the load has had `n` more writes acknowledged.
    pub async fn progress(&self, n: usize) {
        let start = self.ledger.acknowledged.lock().unwrap().len();
        poll_for(Duration::from_secs(120), &format!("{n} more acknowledged writes"), || async {
            (self.ledger.acknowledged.lock().unwrap().len() >= start + n).then_some(())
        })
        .await;
    }
}

/// Sends one request until it is answered with something other than a failure to retry
/// (a connection error, a 5xx, a 429), recording each failure. Returns the final answer.
async fn until_answered(
    target: &Target,
    ledger: &Ledger,
    method: &str,
    path: &str,
    body: Option<&Value>,
    retried: &mut bool,
) -> (u16, Value) {
    let started = Instant::now();
    loop {
        ledger.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = target.send(method, path, body).await;
        match outcome {
            Ok((status, body, _)) if status < 500 && status != 429 => {
                if status < 300 {
                    ledger.acknowledged.lock().unwrap().push(Instant::now());
                }
                return (status, body);
            }
            Ok((status, answer, retry_after)) => ledger.failures.lock().unwrap().push(Failure {
                at: Instant::now(),
                what: format!("{method} {path}"),
                status: Some(status),
                body: answer,
                retry_after,
            }),
            Err(e) => ledger.failures.lock().unwrap().push(Failure {
                at: Instant::now(),
                what: format!("{method} {path}: {e}"),
                status: None,
                body: Value::Null,
                retry_after: None,
            }),
        }
        *retried = true;
        assert!(started.elapsed() < GIVE_UP, "{method} {path} was not answered within {GIVE_UP:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn provision(target: &Target, ledger: &Ledger, user_name: &str, i: usize) {
    let user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "First", "familyName": "Load"},
        "emails": [{"value": user_name, "type": "work", "primary": true}],
        "active": true,
    });
    let mut retried = false;
    let (status, body) = until_answered(target, ledger, "POST", "/scim/v2/Users", Some(&user), &mut retried).await;
    let id = match status {
        201 => body["id"].as_str().expect("a created user's id").to_owned(),
        // Our first attempt was applied but its answer lost: the user is there, once.
        409 if retried => {
            let filter = format!("/scim/v2/Users?filter=userName%20eq%20%22{user_name}%22");
            let mut again = false;
            let (s, found) = until_answered(target, ledger, "GET", &filter, None, &mut again).await;
            assert_eq!(s, 200);
            assert_eq!(found["totalResults"], 1, "exactly one {user_name}");
            found["Resources"][0]["id"].as_str().unwrap().to_owned()
        }
        _ => panic!("creating {user_name}: {status} {body}"),
    };
    let record = |f: &dyn Fn(&mut Expected)| {
        let mut users = ledger.users.lock().unwrap();
        f(users.entry(user_name.to_owned()).or_insert_with(|| Expected {
            id: id.clone(),
            given_name: Some("First".to_owned()),
            active: true,
            assigned: false,
            version: 1,
        }));
    };
    record(&|_| {});
    let given = format!("Given{i}");
    let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": given}]});
    let path = format!("/scim/v2/Users/{id}");
    let (status, body) = until_answered(target, ledger, "PATCH", &path, Some(&rename), &mut retried).await;
    assert_eq!(status, 200, "renaming {user_name}: {body}");
    record(&|e| {
        if e.given_name.as_deref() != Some(given.as_str()) {
            e.version += 1;
        }
        e.given_name = Some(given.clone());
    });
    if i.is_multiple_of(2) {
        let assignment = json!({"userId": id, "contentId": format!("course-{i}"), "title": format!("Course {i}")});
        let (status, body) =
            until_answered(target, ledger, "POST", "/api/v1/assignments", Some(&assignment), &mut retried).await;
        assert!((200..300).contains(&status), "assigning to {user_name}: {status} {body}");
        record(&|e| e.assigned = true);
    } else if i.is_multiple_of(3) {
        let deactivate = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "value": {"active": false}}]});
        let (status, body) = until_answered(target, ledger, "PATCH", &path, Some(&deactivate), &mut retried).await;
        assert_eq!(status, 200, "deactivating {user_name}: {body}");
        record(&|e| {
            if e.active {
                e.version += 1;
            }
            e.active = false;
        });
    }
}

/// How many sends the notification service makes at once: its consumer's lanes
/// (`LANES` in services/notification/src/consumer.rs), each deciding and sending one message at a
/// time. The SMTP pool does not bound it lower: lettre's pool caps the idle connections it keeps,
/// not the sessions open at once.
pub const SEND_LANES: usize = 16;

/// The notification service's durable consumer (`NOTIFICATION_CONSUMER`'s default).
const NOTIFICATION_CONSUMER: &str = "notification";

/// Which emails may have been delivered again: after a crash of the sender between the SMTP
/// server's acceptance and the record of it, the same message (same Message-ID) goes once more.
/// Only a message already delivered before the crash can be one of those, and only once; each of
/// the sender's lanes can hold one such message at the moment of the crash, so at most
/// [`SEND_LANES`] in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resends {
    None,
    /// Once more at most, and only to these recipients (lowercase; delivered to before the
    /// crash); [`SEND_LANES`] of them at most.
    OnceOf(HashSet<String>),
}

/// The notification consumer as the server sees it.
struct ConsumerState {
    /// Everything on the stream is acknowledged: nothing left to deliver, nothing awaiting an
    /// answer (a message NAKed with a delay awaits one too).
    idle: bool,
    ack_wait: Duration,
    detail: String,
}

async fn consumer_state(js: &jetstream::Context, stream: &str) -> Option<ConsumerState> {
    let mut stream = js.get_stream(stream).await.ok()?;
    let last = stream.info().await.ok()?.state.last_sequence;
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer(NOTIFICATION_CONSUMER).await.ok()?;
    let info = consumer.info().await.ok()?;
    Some(ConsumerState {
        idle: info.ack_floor.stream_sequence >= last && info.num_pending == 0 && info.num_ack_pending == 0,
        ack_wait: info.config.ack_wait,
        detail: format!(
            "stream's last sequence {last}, ack floor {}, {} not yet delivered, {} awaiting an answer",
            info.ack_floor.stream_sequence, info.num_pending, info.num_ack_pending
        ),
    })
}

/// Emails claimed (`sending`) or waiting for their next attempt (`pending`).
async fn unfinished_emails(stack: &ProcessStack) -> Option<Vec<(Uuid, String, i32, Option<String>)>> {
    let mut db = PgConnection::connect(&stack.notification_db_url).await.ok()?;
    sqlx::query_as("SELECT id, status, attempts, last_error FROM emails WHERE status IN ('pending', 'sending')")
        .fetch_all(&mut db)
        .await
        .ok()
}

/// Waits until nothing more can reach the SMTP server: one ack wait of the notification
/// consumer has passed since `since` (the latest disturbance: a message delivered to a process
/// that died, or whose answer was lost, is redelivered one ack wait after its delivery at the
/// latest), its consumer is idle (everything on the stream acknowledged, nothing awaiting an
/// answer) and no email is claimed or waiting for a retry. Returns the ack wait.
///
/// Bound: `since` + the ack wait (send timeout + 60 s: 65 s with `SMTP_TIMEOUT_SECS=5`), or
/// longer only while something is still being sent or retried, up to 180 s more.
pub async fn notifications_settled(stack: &ProcessStack, since: Instant) -> Duration {
    let client = crate::connect_as(&stack.nats_url).await;
    let js = jetstream::new(client);
    let ack_wait = poll("the notification consumer's settings", || async {
        consumer_state(&js, &stack.stream).await.map(|s| s.ack_wait)
    })
    .await;
    tokio::time::sleep_until((since + ack_wait).into()).await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let consumer = consumer_state(&js, &stack.stream).await;
        let emails = unfinished_emails(stack).await;
        if consumer.as_ref().is_some_and(|c| c.idle) && emails.as_ref().is_some_and(Vec::is_empty) {
            return ack_wait;
        }
        assert!(
            Instant::now() < deadline,
            "the notification service did not settle within 180 s of one ack wait ({ack_wait:?}): consumer {}; \
             emails still claimed or waiting for a retry: {emails:?}",
            consumer.map_or_else(|| "not found".to_owned(), |c| c.detail),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the notification service knows of users whose email has not come: their projection,
/// the decisions on their events (their own and their assignments', found by event id in
/// `events`: an assignment's decision is keyed by the assignment) and their emails.
async fn undelivered(stack: &ProcessStack, missing: &[&Expected], events: &[StreamEvent]) -> String {
    let ids: Vec<Uuid> = missing.iter().filter_map(|e| Uuid::parse_str(&e.id).ok()).collect();
    let assignments: Vec<Uuid> = events
        .iter()
        .filter(|e| match &e.envelope.payload {
            Some(Payload::ContentAssigned(a)) => missing.iter().any(|m| m.id == a.user_id),
            _ => false,
        })
        .filter_map(|e| Uuid::parse_str(&e.envelope.event_id).ok())
        .collect();
    let Ok(mut db) = PgConnection::connect(&stack.notification_db_url).await else {
        return format!("{missing:?} (the notification database was not reachable)");
    };
    let recipients: Vec<(Uuid, String, i64, bool, bool)> =
        sqlx::query_as("SELECT user_id, email, version, active, deleted FROM recipients WHERE user_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut db)
            .await
            .unwrap_or_default();
    let decisions: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT resource_id, event_type, outcome, reason FROM decisions
         WHERE resource_id = ANY($1) OR event_id = ANY($2) ORDER BY decided_at",
    )
    .bind(&ids)
    .bind(&assignments)
    .fetch_all(&mut db)
    .await
    .unwrap_or_default();
    let emails: Vec<(Uuid, String, i32, Option<String>)> =
        sqlx::query_as("SELECT user_id, status, attempts, last_error FROM emails WHERE user_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut db)
            .await
            .unwrap_or_default();
    format!(
        "{missing:#?}\nrecipients {recipients:#?}\ndecisions {decisions:#?}\n\
         assignment events on the stream {assignments:?}\nemails {emails:#?}"
    )
}

/// Checks every promise against what the load was told, once everything has settled:
/// - every write answered 2xx is in the database, and nothing else of the run is; each user's
///   stored version is the number of changes acknowledged to the client;
/// - every committed change has exactly one event on the stream, in commit order per user; one
///   `content.assigned` event per acknowledged assignment, per user;
/// - every email owed was delivered, and none twice (beyond `resends` of the same message),
///   counted once the notification service has settled ([`notifications_settled`], one ack wait
///   after [`Ledger::quiet_since`]).
pub async fn verify(stack: &ProcessStack, run: &str, ledger: &Ledger, resends: Resends) {
    let users = ledger.users.lock().unwrap().clone();
    assert!(!users.is_empty(), "the load provisioned nobody");
    let mut db = PgConnection::connect(&stack.directory_db_url).await.unwrap();
    // Everything committed is relayed.
    poll("the outbox to drain", || {
        let url = stack.directory_db_url.clone();
        async move {
            let mut c = PgConnection::connect(&url).await.ok()?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE stream_seq IS NULL")
                .fetch_one(&mut c)
                .await
                .ok()?;
            (n == 0).then_some(())
        }
    })
    .await;

    // 1. The database holds exactly what was acknowledged.
    let rows: Vec<(Uuid, String, i64, bool, Option<String>)> = sqlx::query_as(
        "SELECT id, user_name, version, active, document #>> '{name,givenName}' FROM users WHERE user_name LIKE $1",
    )
    .bind(format!("{run}-%"))
    .fetch_all(&mut db)
    .await
    .unwrap();
    let stored: HashMap<String, (Uuid, i64, bool, Option<String>)> =
        rows.iter().map(|(id, name, v, a, g)| (name.clone(), (*id, *v, *a, g.clone()))).collect();
    assert_eq!(rows.len(), stored.len(), "a userName stored twice");
    for (name, e) in &users {
        let (id, version, active, given) =
            stored.get(name).unwrap_or_else(|| panic!("{name} was acknowledged but is not stored"));
        assert_eq!(id.to_string(), e.id, "{name}");
        assert_eq!(*active, e.active, "{name}: active");
        assert_eq!(given, &e.given_name, "{name}: givenName");
        assert_eq!(*version, e.version, "{name}: the stored version is the number of acknowledged changes ({e:?})");
    }
    // A user created but never acknowledged (the load stopped, or its answer was lost and the
    // retry is in the ledger) would be an extra: none may exist.
    for name in stored.keys() {
        assert!(users.contains_key(name), "{name} is stored but was never acknowledged to the client");
    }

    // 2. One event per committed change, in version order per user.
    let events = stack.events().await;
    let mut ids = HashSet::new();
    for e in &events {
        assert!(ids.insert(e.envelope.event_id.clone()), "event {} is on the stream twice", e.envelope.event_id);
    }
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for e in events.iter().filter(|e| e.subject.contains(".user.")) {
        versions.entry(e.envelope.resource_id.clone()).or_default().push(e.envelope.resource_version);
    }
    for (name, (id, version, _, _)) in &stored {
        let seen = versions.get(&id.to_string()).cloned().unwrap_or_default();
        let expected: Vec<i64> = (1..=*version).collect();
        if seen != expected {
            let detail: Vec<String> = events
                .iter()
                .filter(|e| e.envelope.resource_id == id.to_string())
                .map(|e| {
                    format!("#{} {} v{} {}", e.sequence, e.subject, e.envelope.resource_version, e.envelope.event_id)
                })
                .collect();
            panic!(
                "{name}: the user's events by version, in stream order: {seen:?}, expected {expected:?}: {detail:#?}"
            );
        }
    }
    let assigned: Vec<&StreamEvent> = events.iter().filter(|e| e.subject.ends_with(".content.assigned")).collect();
    let owed: Vec<(&String, &Expected)> = users.iter().filter(|(_, e)| e.assigned).collect();
    assert_eq!(assigned.len(), owed.len(), "one content.assigned event per acknowledged assignment");
    let mut assigned_to: HashMap<&str, Vec<u64>> = HashMap::new();
    for e in &assigned {
        let Some(Payload::ContentAssigned(a)) = &e.envelope.payload else {
            panic!("#{} {} carries no ContentAssigned", e.sequence, e.subject);
        };
        assigned_to.entry(a.user_id.as_str()).or_default().push(e.sequence);
    }
    for (name, e) in &users {
        let seen = assigned_to.get(e.id.as_str()).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            seen.len(),
            usize::from(e.assigned),
            "{name}: one content.assigned event per acknowledged assignment of the user (at stream sequences {seen:?})"
        );
    }

    // 3. Every email owed, once.
    // A retry after an SMTP outage may be a minute away (NOTIFICATION_RETRY_DELAYS: 10s, 1m, ...).
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let missing: Vec<&Expected> =
            owed.iter().filter(|(name, _)| stack.smtp.received_by(name).is_empty()).map(|(_, e)| *e).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            panic!("owed emails not delivered within 150 s: {}", undelivered(stack, &missing, &events).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second send of a message comes with its redelivery, one ack wait after the delivery that
    // was not answered: counted once that has passed since the last disturbance and nothing is
    // left to deliver or send (at most the ack wait after it, 65 s with a 5 s send timeout, and
    // mostly overlapping the load and the waits above; longer only while emails are retried).
    notifications_settled(stack, ledger.quiet_since()).await;
    let mut resent = Vec::new();
    for (name, e) in &users {
        let got = stack.smtp.received_by(name);
        if !e.assigned {
            assert!(got.is_empty(), "{name} owed no email but got {}", got.len());
            continue;
        }
        let distinct: HashSet<Option<String>> = got.iter().map(|m| m.header("Message-ID")).collect();
        assert_eq!(distinct.len(), 1, "{name}: one message, got {}", got.len());
        if got.len() > 1 {
            resent.push((name.clone(), got.len() - 1));
        }
    }
    if !resent.is_empty() {
        eprintln!("delivered again (the same message): {resent:?}");
    }
    match resends {
        Resends::None => assert!(resent.is_empty(), "emails delivered twice: {resent:?}"),
        Resends::OnceOf(before) => {
            for (name, again) in &resent {
                assert_eq!(*again, 1, "{name}: delivered again {again} times");
                assert!(
                    before.contains(&name.to_ascii_lowercase()),
                    "{name}: delivered again, though not delivered before the crash"
                );
            }
            assert!(
                resent.len() <= SEND_LANES,
                "{} emails delivered again, more than one per send lane ({SEND_LANES}) in flight at the crash: {resent:?}",
                resent.len()
            );
        }
    }
}
