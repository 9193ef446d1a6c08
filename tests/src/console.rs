//! A console client at the HTTP level: a cookie jar of its own (so tests can plant, drop and
//! inspect cookies), no redirects followed, forms posted as a browser posts them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

/// A page as the server answered it.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Page {
    /// Where a redirect points.
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The value of the first hidden input named `name`.
    pub fn field(&self, name: &str) -> Option<String> {
        let at = self.html.find(&format!("name=\"{name}\" value=\""))?;
        let rest = &self.html[at + name.len() + 15..];
        Some(rest[..rest.find('"')?].to_owned())
    }

    /// The text of the element with `id` (up to its first tag's end; enough for a number or code).
    pub fn by_id(&self, id: &str) -> Option<String> {
        let at = self.html.find(&format!("id=\"{id}\""))?;
        let rest = &self.html[at..];
        let start = rest.find('>')? + 1;
        let end = rest[start..].find('<')?;
        Some(unescape(rest[start..start + end].trim()))
    }
}

/// Text as the browser shows it (the escapes the console's templates make).
pub fn unescape(html: &str) -> String {
    [("&#x2f;", "/"), ("&#x27;", "'"), ("&quot;", "\""), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")]
        .iter()
        .fold(html.to_owned(), |s, (from, to)| s.replace(from, to))
}

pub struct ConsoleClient {
    pub base: String,
    http: reqwest::Client,
    jar: Mutex<HashMap<String, String>>,
}

impl ConsoleClient {
    pub fn new(gateway: SocketAddr) -> Self {
        ConsoleClient {
            base: format!("http://{gateway}"),
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            jar: Mutex::new(HashMap::new()),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.to_owned(), value.to_owned());
    }

    fn cookie_header(&self) -> String {
        self.jar.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn finish(&self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            let mut jar = self.jar.lock().unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
        Page { status, headers, html: response.text().await.unwrap() }
    }

    pub async fn get(&self, path: &str) -> Page {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header()).send().await;
        self.finish(r.unwrap()).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(fields).unwrap();
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await;
        self.finish(r.unwrap()).await
    }

    /// Posts a form of a signed-in page, with the session's CSRF token taken from `from`.
    pub async fn submit(&self, from: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = from.field("_csrf").expect("the page has a form with a CSRF token");
        let mut all = vec![("_csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }

    /// Signs in as a tenant's admin; the sign-in page's own token is taken from the form.
    pub async fn sign_in(&self, subdomain: &str, key: &str) -> Page {
        let form = self.get("/console/signin").await;
        let token = form.field("_signin").unwrap();
        self.post("/console/signin", &[("_signin", &token), ("subdomain", subdomain), ("key", key)]).await
    }

    /// Signs in as an operator.
    pub async fn sign_in_operator(&self, subdomain: &str, token: &str) -> Page {
        let form = self.get("/console/signin").await;
        let signin = form.field("_signin").unwrap();
        self.post("/console/signin", &[("_signin", &signin), ("subdomain", subdomain), ("operator_token", token)]).await
    }
}
