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

use crate::{Cleanup, admin_database_url, database_url, nats_url, poll, smtp};

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
            .env("RUST_LOG", "info")
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

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("a running process");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
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
    /// notification's health port.
    pub notification_health: SocketAddr,
    pub smtp: Arc<smtp::SmtpSink>,
    _dir: TempDir,
    _cleanup: Cleanup,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl ProcessStack {
    /// Starts everything with `extra` added to every service's environment.
    pub async fn start(extra: &[(&str, String)]) -> ProcessStack {
        crate::init_logging();
        let id = Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("scimtest_{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (dir_db, notif_db) = (format!("scimtest_{id}_dir"), format!("scimtest_{id}_notif"));
        let cleanup = Cleanup { databases: vec![dir_db.clone(), notif_db.clone()], stream: format!("TEST_{id}") };
        let mut admin = PgConnection::connect(&admin_database_url()).await.expect("connect to the test PostgreSQL");
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
                ("NATS_URL", nats_url()),
                ("NATS_STREAM", cleanup.stream.clone()),
                ("NATS_SUBJECT_PREFIX", prefix.clone()),
            ]);
            all.extend(env(extra));
            all.extend(env(more));
            all
        };
        let directory = Service::start(
            "user-directory",
            &common(&[("DIRECTORY_LISTEN", directory_addr.to_string()), ("DATABASE_URL", database_url(&dir_db))]),
            &dir,
        );
        let gateway = Service::start(
            "scim-gateway",
            &common(&[
                ("GATEWAY_LISTEN", gateway_addr.to_string()),
                ("DIRECTORY_URL", format!("http://{directory_addr}")),
            ]),
            &dir,
        );
        let notification = Service::start(
            "notification",
            &common(&[
                ("DATABASE_URL", database_url(&notif_db)),
                ("SMTP_URL", smtp.url()),
                ("MAIL_FROM", "Learning Platform <no-reply@learning.test>".to_owned()),
                ("NOTIFICATION_HEALTH_LISTEN", health_addr.to_string()),
            ]),
            &dir,
        );
        let client = reqwest::Client::new();
        for url in [format!("http://{gateway_addr}/readyz"), format!("http://{health_addr}/readyz")] {
            poll(&format!("{url} to answer"), || async {
                client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
            })
            .await;
        }
        ProcessStack {
            directory,
            gateway,
            notification,
            gateway_addr,
            api_key: key.key,
            directory_db_url: database_url(&dir_db),
            notification_health: health_addr,
            smtp,
            _dir: TempDir(dir),
            _cleanup: cleanup,
        }
    }

    /// `Basic` credentials of the tenant `acme`.
    pub fn auth(&self) -> String {
        crate::basic("acme", &self.api_key)
    }

    /// Changes the tenant `acme`'s settings, as an operator would.
    pub async fn update_tenant(&self, update: &user_directory::store::TenantUpdate) {
        let db = infra::DatabaseArgs::new(&self.directory_db_url);
        let store = user_directory::Store::new(db.pool_as(user_directory::store::APP_ROLE).unwrap(), "unused");
        store.update_tenant("acme", update).await.unwrap();
        store.pool().close().await;
    }
}
