//! The services as the operator runs them: their binaries in processes of their own (for what a
//! process alone shows: signals, its own telemetry resource, its logs), configured through the
//! environment exactly as a deployment configures them.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::{Cleanup, admin_database_url, nats_url, poll, smtp};

/// The path of a workspace binary, built if it is not there yet (the test binaries live in
/// `target/<profile>/deps`, the service binaries one level up).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut dir = exe.parent().expect("the target directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut args = vec!["build", "--quiet", "-p", name, "--bin", name];
        if dir.ends_with("release") {
            args.push("--release");
        }
        let status = std::process::Command::new(cargo).args(&args).status().expect("run cargo build");
        assert!(status.success(), "building {name} failed");
    }
    path
}

/// An address on the loopback interface that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// A service running in its own process; killed when dropped.
pub struct Service {
    pub name: String,
    child: Child,
    /// Its stderr (the JSON log lines).
    pub log: PathBuf,
}

impl Service {
    /// Starts `binary` with `env` (and nothing else of the test's environment that could change
    /// its behaviour), logging JSON to a file.
    pub fn start(name: &str, env: &[(String, String)], dir: &std::path::Path) -> Service {
        let log = dir.join(format!("{name}-{}.log", Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("create the log file");
        let mut command = Command::new(binary(name));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // `TEST_SERVICES_RUST_LOG` sets the services' log filter when a run needs more.
            .env("RUST_LOG", std::env::var("TEST_SERVICES_RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service { name: name.to_owned(), child, log }
    }

    /// Its resident memory now and at its peak, in MB (Linux).
    pub fn memory_mb(&self) -> (f64, f64) {
        let status = self.child.id().and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
        let field = |name: &str| {
            status
                .as_deref()
                .and_then(|s| s.lines().find(|l| l.starts_with(name)))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map_or(0.0, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Resets the peak of its resident memory that the kernel keeps (`VmHWM`) to what it holds
    /// now (Linux: `5` to `/proc/<pid>/clear_refs`), so that [`Service::memory_mb`]'s peak is then
    /// the peak of what follows. False where that could not be done (the peak stays the
    /// process's whole life's).
    pub fn reset_peak_memory(&self) -> bool {
        self.child.id().is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("a running process");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Sends SIGKILL, as a crash or the OOM killer would, and waits for the process to go.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether it is still running (it was neither killed nor did it exit).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; returns whether it exited successfully.
    pub async fn wait(&mut self) -> bool {
        self.child.wait().await.map(|s| s.success()).unwrap_or(false)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// The three services in processes of their own, with databases, a stream and a tenant `acme`.
pub struct ProcessStack {
    pub directory: Service,
    pub gateway: Service,
    pub notification: Service,
    pub gateway_addr: SocketAddr,
    pub api_key: String,
    /// user-directory's database.
    pub directory_db_url: String,
    /// notification's database.
    pub notification_db_url: String,
    /// notification's health port.
    pub notification_health: SocketAddr,
    pub smtp: Arc<smtp::SmtpSink>,
    /// The NATS server and the stack's stream on it.
    pub nats_url: String,
    pub stream: String,
    /// Each service's environment, to start it again as it was.
    envs: [Vec<(String, String)>; 3],
    dir: TempDir,
    _cleanup: Cleanup,
}

/// The PostgreSQL and NATS servers a stack runs against.
#[derive(Clone, Debug)]
pub struct Servers {
    /// A superuser's URL (databases are created through it).
    pub postgres_admin_url: String,
    pub nats_url: String,
}

impl Default for Servers {
    /// The test servers (`TEST_DATABASE_URL`, `TEST_NATS_URL`).
    fn default() -> Self {
        Servers { postgres_admin_url: admin_database_url(), nats_url: nats_url() }
    }
}

impl Servers {
    /// The URL of a database on this PostgreSQL server.
    pub fn database_url(&self, name: &str) -> String {
        let admin = &self.postgres_admin_url;
        let base = admin.split('?').next().unwrap_or(admin);
        let (server, _) = base.rsplit_once('/').expect("the admin URL names a database");
        format!("{server}/{name}")
    }
}

/// One of the stack's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Directory = 0,
    Gateway = 1,
    Notification = 2,
}

/// A directory removed when dropped, unless a test failed (or `TEST_KEEP_SERVICE_LOGS` is set):
/// then the services' logs stay there.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("TEST_KEEP_SERVICE_LOGS").is_some() {
            eprintln!("the services' logs are kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl ProcessStack {
    /// Starts everything with `extra` added to every service's environment.
    pub async fn start(extra: &[(&str, String)]) -> ProcessStack {
        ProcessStack::start_on(&Servers::default(), extra).await
    }

    /// Starts everything against `servers`, with `extra` added to every service's environment.
    pub async fn start_on(servers: &Servers, extra: &[(&str, String)]) -> ProcessStack {
        crate::init_logging();
        let database_url = |name: &str| servers.database_url(name);
        let id = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("scimtest_{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (dir_db, notif_db) = (format!("scimtest_{id}_dir"), format!("scimtest_{id}_notif"));
        let cleanup = Cleanup {
            databases: vec![dir_db.clone(), notif_db.clone()],
            stream: format!("TEST_{id}"),
            admin_url: servers.postgres_admin_url.clone(),
            nats_url: servers.nats_url.clone(),
        };
        let mut admin =
            PgConnection::connect(&servers.postgres_admin_url).await.expect("connect to the test PostgreSQL");
        for db in [&dir_db, &notif_db] {
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).execute(&mut admin).await.unwrap();
        }
        let prefix = format!("t{id}");
        // The tenant is created as the operator would, before the services start.
        let db = infra::DatabaseArgs::new(&database_url(&dir_db));
        user_directory::Store::migrate(&db).await.unwrap();
        let store = user_directory::Store::new(db.pool_as(user_directory::store::APP_ROLE).unwrap(), &prefix);
        let (_, key) = store.create_tenant("acme", "Acme Corp").await.unwrap();

        let smtp = smtp::SmtpSink::start().await;
        let (directory_addr, gateway_addr, health_addr) = (free_addr(), free_addr(), free_addr());
        let common = |more: &[(&str, String)]| {
            let mut all = env(&[
                ("NATS_URL", servers.nats_url.clone()),
                ("NATS_STREAM", cleanup.stream.clone()),
                ("NATS_SUBJECT_PREFIX", prefix.clone()),
            ]);
            all.extend(env(extra));
            all.extend(env(more));
            all
        };
        let token = crate::random_token();
        let notification_token = crate::random_token();
        let envs = [
            common(&[
                ("DIRECTORY_LISTEN", directory_addr.to_string()),
                ("DATABASE_URL", database_url(&dir_db)),
                ("DIRECTORY_TOKEN", token.clone()),
            ]),
            common(&[
                ("GATEWAY_LISTEN", gateway_addr.to_string()),
                ("DIRECTORY_URL", format!("http://{directory_addr}")),
                ("DIRECTORY_TOKEN", token.clone()),
                ("NOTIFICATION_URL", format!("http://{health_addr}")),
                ("NOTIFICATION_TOKEN", notification_token.clone()),
            ]),
            common(&[
                ("DATABASE_URL", database_url(&notif_db)),
                ("SMTP_URL", smtp.url()),
                ("MAIL_FROM", "Learning Platform <no-reply@learning.test>".to_owned()),
                ("NOTIFICATION_HEALTH_LISTEN", health_addr.to_string()),
                ("NOTIFICATION_TOKEN", notification_token.clone()),
            ]),
        ];
        let directory = Service::start("user-directory", &envs[Which::Directory as usize], &dir);
        let gateway = Service::start("scim-gateway", &envs[Which::Gateway as usize], &dir);
        let notification = Service::start("notification", &envs[Which::Notification as usize], &dir);
        let stack = ProcessStack {
            directory,
            gateway,
            notification,
            gateway_addr,
            api_key: key.key,
            directory_db_url: database_url(&dir_db),
            notification_db_url: database_url(&notif_db),
            notification_health: health_addr,
            smtp,
            nats_url: servers.nats_url.clone(),
            stream: cleanup.stream.clone(),
            envs,
            dir: TempDir(dir),
            _cleanup: cleanup,
        };
        stack.wait_ready().await;
        stack
    }

    /// A service of the stack.
    pub fn service(&mut self, which: Which) -> &mut Service {
        match which {
            Which::Directory => &mut self.directory,
            Which::Gateway => &mut self.gateway,
            Which::Notification => &mut self.notification,
        }
    }

    /// Starts a service again as it was first started (after it was killed or stopped); its
    /// previous log is kept beside the new one.
    pub fn respawn(&mut self, which: Which) {
        let name = self.service(which).name.clone();
        let fresh = Service::start(&name, &self.envs[which as usize], &self.dir.0);
        *self.service(which) = fresh;
    }

    /// [`ProcessStack::respawn`], with `changes` made to its environment from now on (as an
    /// operator's new setting and a restart).
    pub fn respawn_with(&mut self, which: Which, changes: &[(&str, String)]) {
        let env = &mut self.envs[which as usize];
        for (key, value) in changes {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), value.clone()));
        }
        self.respawn(which);
    }

    /// Waits until the gateway and the notification service answer ready.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for url in
            [format!("http://{}/readyz", self.gateway_addr), format!("http://{}/readyz", self.notification_health)]
        {
            poll(&format!("{url} to answer"), || async {
                client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
            })
            .await;
        }
    }

    /// Every log line of every service so far (killed ones' included).
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir.0) {
            for e in entries.flatten() {
                out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    /// Every event on the stack's stream, in stream order.
    pub async fn events(&self) -> Vec<crate::StreamEvent> {
        let client = crate::connect_as(&self.nats_url).await;
        crate::read_stream(&client, &self.stream).await
    }

    /// `Basic` credentials of the tenant `acme`.
    pub fn auth(&self) -> String {
        crate::basic("acme", &self.api_key)
    }

    /// The directory's store, as the operator's commands use it (the events it writes go to the
    /// stack's stream). Close it when done.
    pub fn store(&self) -> user_directory::Store {
        let db = infra::DatabaseArgs::new(&self.directory_db_url);
        let prefix = self.envs[Which::Directory as usize]
            .iter()
            .find(|(k, _)| k == "NATS_SUBJECT_PREFIX")
            .map(|(_, v)| v.clone())
            .expect("the stack's subject prefix");
        user_directory::Store::new(db.pool_as(user_directory::store::APP_ROLE).unwrap(), &prefix)
    }

    /// Changes the tenant `acme`'s settings, as an operator would.
    pub async fn update_tenant(&self, update: &user_directory::store::TenantUpdate) {
        let store = self.store();
        store.update_tenant("acme", update).await.unwrap();
        store.close().await;
    }
}
