//! The tenant console in a real browser: headless Chromium driven through chromedriver
//! (Debian's `chromium` and `chromium-driver`, which `make test` installs when missing). An admin
//! signs in, follows an Okta create and deactivation through the request log and the health page,
//! releases a held deprovision, issues and revokes a key; another tenant's admin cannot reach any
//! of it. Every page is checked for unlabelled form fields, and a screenshot of each is saved
//! under target/console-screenshots/ (the test's artifacts).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use e2e::{TestStack, basic, poll, poll_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use user_directory::store::TenantUpdate;

use e2e::{okta_deactivation as deactivate, okta_user as user};

/// chromedriver on a free port, with a headless Chromium session; both end with the value.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
    base: String,
    shots: PathBuf,
}

fn program(env: &str, candidates: &[&str]) -> String {
    if let Ok(p) = std::env::var(env) {
        return p;
    }
    candidates.iter().find(|c| std::path::Path::new(c).exists()).map(|c| (*c).to_owned()).unwrap_or_else(|| {
        panic!(
            "{env} is not set and none of {candidates:?} exists: install chromium and chromium-driver (make test does)"
        )
    })
}

impl Browser {
    async fn start(gateway: std::net::SocketAddr) -> Browser {
        let driver = program("CHROMEDRIVER", &["/usr/bin/chromedriver"]);
        let chromium = program("CHROMIUM", &["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                   "--disable-dev-shm-usage", "--window-size=1280,900"]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        // Chromium's first start on a busy machine can take a while.
        let client = poll_for(Duration::from_secs(60), "chromedriver to accept a session", || {
            let (caps, url, connector) = (caps.clone(), url.clone(), connector.clone());
            async move { ClientBuilder::new(connector).capabilities(caps).connect(&url).await.ok() }
        })
        .await;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser { client, _driver: child, base: format!("http://{gateway}"), shots }
    }

    async fn open(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// The text of the first element matching `css`, waiting a while for it to appear.
    async fn text(&self, css: &str) -> String {
        let wait = self.client.wait().at_most(Duration::from_secs(30));
        wait.for_element(Locator::Css(css)).await.unwrap().text().await.unwrap()
    }

    async fn fill(&self, css: &str, value: &str) {
        let e = self.client.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    /// Clicks a button that submits a form, and waits for the page that answers it to have
    /// loaded: a click returns before the navigation it starts, so without this the next look
    /// may be at the page the click left (seen in CI: the setup test's result not yet there).
    async fn submit(&self, css: &str) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        poll_for(Duration::from_secs(30), "the form's answer to replace the page", || {
            let old = old.clone();
            async move { old.tag_name().await.is_err().then_some(()) }
        })
        .await;
        poll_for(Duration::from_secs(30), "the answer to load", || async {
            let state = self.client.execute("return document.readyState;", vec![]).await.ok()?;
            (state == "complete").then_some(())
        })
        .await;
    }

    /// Saves a screenshot, and checks the page's form fields all have a label.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
        let unlabelled = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
                   .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(unlabelled, json!([]), "{name}: form fields without a label");
    }

    async fn sign_in(&self, subdomain: &str, key: &str) {
        self.open("/console/signin").await;
        self.fill("#subdomain", subdomain).await;
        self.fill("#key", key).await;
        self.submit("form.stack button[type=submit]").await;
    }

    async fn sign_out(&self) {
        self.submit(".signout button").await;
        assert_eq!(self.path().await, "/console/signin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_follows_provisioning_resolves_the_brake_and_manages_keys_in_a_browser() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let admin = stack.store().issue_key("acme", "admin", None, &["admin".to_owned()]).await.unwrap().key;
    let scim = stack.store().issue_key("acme", "okta", None, &["scim".to_owned()]).await.unwrap().key;
    let browser = Browser::start(stack.gateway_addr).await;

    // The identity provider's key does not open the console.
    browser.sign_in("acme", &scim).await;
    assert!(browser.text(".error").await.contains("admin scope"));
    browser.shot("signin-refused").await;

    browser.sign_in("acme", &admin).await;
    assert_eq!(browser.path().await, "/console/health");

    // Setup, and the connection test Okta runs first.
    browser.open("/console/setup").await;
    assert_eq!(browser.text("#username").await, "acme");
    browser.submit("form[action='/console/setup/test'] button").await;
    assert!(browser.text("#test-result").await.starts_with("Connected"));
    browser.shot("setup").await;

    // Okta creates a user, then deactivates them: the log shows both, the detail the event.
    let r = okta.post("/Users", user("ann@acme.com")).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(okta.patch(&format!("/Users/{id}"), deactivate()).await.status, 200);
    poll("the requests to be logged", || async {
        browser.open("/console/requests?contains=ann%40acme.com").await;
        let rows = browser.client.find_all(Locator::Css("table.log tbody tr td a")).await.unwrap();
        (rows.len() >= 2).then_some(())
    })
    .await;
    browser.fill("#f-contains", "ann@acme.com").await;
    browser.submit("form.filters button").await;
    let methods: Vec<String> = {
        let cells = browser.client.find_all(Locator::Css("table.log tbody tr td:nth-child(2)")).await.unwrap();
        let mut out = Vec::new();
        for c in cells {
            out.push(c.text().await.unwrap());
        }
        out
    };
    assert!(methods.contains(&"POST".to_owned()) && methods.contains(&"PATCH".to_owned()), "{methods:?}");
    browser.shot("request-log").await;
    let created = r.headers["x-request-id"].to_str().unwrap();
    browser.open(&format!("/console/requests/{created}")).await;
    assert_eq!(browser.text("#status").await, "201");
    assert!(browser.text("#request-body").await.contains("[redacted]"));
    assert!(!browser.text("#events").await.contains("none"));
    browser.shot("request").await;

    // Health counts them.
    browser.open("/console/health").await;
    assert!(browser.text("#requests-24h").await.parse::<u32>().unwrap() >= 3);
    assert!(browser.text("#events-24h").await.parse::<u32>().unwrap() >= 2);
    browser.shot("health").await;
    browser.open("/console/users?q=ann").await;
    assert!(browser.text("table").await.contains("archived"));
    browser.shot("users").await;

    // A mass deactivation trips the brake; the admin releases one held change after confirming.
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(
            okta.post("/Users", user(&format!("staff{i}@acme.com"))).await.body["id"].as_str().unwrap().to_owned(),
        );
    }
    let brake = TenantUpdate { brake_share: Some(0.2), brake_min_users: Some(1), ..Default::default() };
    stack.store().update_tenant("acme", &brake).await.unwrap();
    for id in &ids {
        okta.patch(&format!("/Users/{id}"), deactivate()).await;
    }
    let held = stack.store().list_held("acme").await.unwrap();
    assert!(held.len() >= 2);
    browser.open("/console/health").await;
    assert_eq!(browser.text("#held-count").await, held.len().to_string());
    browser.open("/console/held").await;
    browser.shot("held").await;
    browser.click(&format!("input[value='{}']", held[0].id)).await;
    browser.submit("button[value=release]").await;
    assert!(browser.text("main p").await.starts_with("Release 1 held deprovision"));
    browser.shot("held-confirm").await;
    browser.submit("main form button[type=submit]").await;
    assert!(browser.text("p[role=status]").await.contains("Released 1"));
    assert_eq!(okta.get(&format!("/Users/{}", held[0].user_id)).await.body["active"], false);
    assert_eq!(stack.store().list_held("acme").await.unwrap().len(), held.len() - 1);

    // Keys: issue one for Okta (shown once), use it, revoke it (confirming the dialog).
    browser.open("/console/keys").await;
    browser.fill("#key-name", "okta-production").await;
    browser.submit("form.stack button[type=submit]").await;
    let new_key = browser.text("#new-key").await;
    assert!(new_key.starts_with("lpscim_"));
    browser.shot("key-issued").await;
    let with_new = stack.okta_at(stack.gateway_addr, &basic("acme", &new_key));
    assert_eq!(with_new.get("/Users?startIndex=1&count=2").await.status, 200);
    let key_id =
        stack.store().list_keys("acme").await.unwrap().iter().find(|k| k.name == "okta-production").unwrap().id;
    browser.open("/console/keys").await;
    browser.click(&format!("#key-{key_id} form button")).await;
    browser.client.accept_alert().await.unwrap();
    poll("the revocation to show", || async {
        browser.text(&format!("#key-{key_id} .state")).await.eq("revoked").then_some(())
    })
    .await;
    browser.shot("keys").await;
    poll("the revoked key to stop working", || async {
        (with_new.get("/Users?startIndex=1&count=2").await.status == 401).then_some(())
    })
    .await;

    // A phone's width: the same pages, still usable.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.open("/console/health").await;
    browser.shot("health-phone").await;
    browser.client.set_window_size(1280, 900).await.unwrap();

    // Another tenant's admin sees none of it, even with acme's addresses.
    browser.sign_out().await;
    let globex = stack.add_tenant("globex").await;
    browser.sign_in("globex", &globex).await;
    assert_eq!(browser.path().await, "/console/health");
    browser.open(&format!("/console/requests/{created}")).await;
    assert_eq!(browser.text("h1").await, "Not Found");
    browser.open("/console/users?q=ann").await;
    assert!(!browser.text("main").await.contains("ann@acme.com"));
    browser.open("/console/held").await;
    assert!(browser.text("#no-held").await.contains("Nothing"));
    browser.shot("other-tenant").await;
    let _ = tokio::time::timeout(Duration::from_secs(5), browser.client.clone().close()).await;
}
