//! A replay harness for Okta's Runscope test suites (`tests/okta/*.json`, the "API Monitoring
//! Tests" export format Okta hands to SCIM integrators). It reads the suite itself, interpolates
//! `{{variables}}`, sends every request step, extracts variables, and evaluates every assertion
//! with Runscope's semantics. Pauses are skipped (our writes are visible immediately).
//!
//! Steps may also carry JavaScript `scripts`; this harness does not run JavaScript, and reports
//! such steps' scripts as not executed rather than as passed.

use std::collections::HashMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

/// A suite file.
#[derive(Debug, Deserialize)]
pub struct Suite {
    pub name: String,
    pub steps: Vec<Step>,
}

/// One step.
#[derive(Debug, Deserialize)]
#[serde(tag = "step_type")]
pub enum Step {
    #[serde(rename = "request")]
    Request(Box<RequestStep>),
    #[serde(rename = "pause")]
    Pause { duration: f64 },
    #[serde(other)]
    Other,
}

/// A request step.
#[derive(Debug, Deserialize)]
pub struct RequestStep {
    #[serde(default)]
    pub note: String,
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: HashMap<String, Vec<String>>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub assertions: Vec<Assertion>,
    #[serde(default)]
    pub variables: Vec<Variable>,
    #[serde(default)]
    pub scripts: Vec<String>,
    #[serde(default)]
    pub skipped: bool,
}

/// An assertion.
#[derive(Debug, Deserialize)]
pub struct Assertion {
    pub comparison: String,
    pub source: String,
    #[serde(default)]
    pub property: Option<String>,
    #[serde(default)]
    pub value: Option<Value>,
}

/// A variable extracted from a response.
#[derive(Debug, Deserialize)]
pub struct Variable {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub property: Option<String>,
}

/// The outcome of one request step.
#[derive(Debug)]
pub struct StepReport {
    pub note: String,
    pub method: String,
    pub url: String,
    pub status: u16,
    pub assertions: usize,
    pub failures: Vec<String>,
    /// JavaScript scripts present on the step, which this harness does not run.
    pub scripts_not_run: usize,
}

impl StepReport {
    /// Okta marks the steps an integration must pass with "Required" in the note.
    pub fn required(&self) -> bool {
        self.note.trim_start().starts_with("Required")
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    pub suite: String,
    pub steps: Vec<StepReport>,
}

impl Report {
    /// Every required step that failed.
    pub fn required_failures(&self) -> Vec<&StepReport> {
        self.steps.iter().filter(|s| s.required() && !s.passed()).collect()
    }

    /// A readable summary: one line per step, failures indented below it.
    pub fn summary(&self) -> String {
        let mut out = format!("{}\n", self.suite);
        for s in &self.steps {
            let mark = if s.passed() { "pass" } else { "FAIL" };
            out.push_str(&format!(
                "  [{mark}] {} ({} {} -> {}, {} assertions)\n",
                s.note.trim(),
                s.method,
                s.url,
                s.status,
                s.assertions
            ));
            for f in &s.failures {
                out.push_str(&format!("         {f}\n"));
            }
            if s.scripts_not_run > 0 {
                out.push_str(&format!("         ({} JavaScript script(s) not run)\n", s.scripts_not_run));
            }
        }
        out
    }
}

/// The variables the SPEC suite's initial script (`tests/okta/Initial_Script_Spec.txt`) sets,
/// generated the same way: a given name `Runscope` + 3 digits, a family name of one upper-case
/// letter, 8 lower-case letters and 3 digits, an email and username made of both at atko.com.
pub fn spec_variables(base_url: &str, auth: &str) -> HashMap<String, String> {
    let r = uuid::Uuid::new_v4();
    let b = r.as_bytes();
    let digit = |i: usize| char::from(b'0' + b[i] % 10);
    let lower = |i: usize| char::from(b'a' + b[i] % 26);
    let given: String = format!("Runscope{}{}{}", digit(0), digit(1), digit(2));
    let mut family = String::new();
    family.push(char::from(b'A' + b[3] % 26));
    family.extend((4..12).map(lower));
    family.extend((12..15).map(digit));
    let email = format!("{given}{family}@atko.com");
    HashMap::from([
        ("SCIMBaseURL".to_owned(), base_url.to_owned()),
        ("auth".to_owned(), auth.to_owned()),
        ("randomGivenName".to_owned(), given),
        ("randomFamilyName".to_owned(), family),
        ("randomEmail".to_owned(), email.clone()),
        ("randomUsername".to_owned(), email.clone()),
        ("randomUsernameCaps".to_owned(), email.to_uppercase()),
        ("InvalidUserEmail".to_owned(), "abcdefgh@atko.com".to_owned()),
        ("UserIdThatDoesNotExist".to_owned(), "010101001010101011001010101011".to_owned()),
    ])
}

/// Replaces `{{name}}` with the variable's value (unknown names are left as they are).
pub fn interpolate(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim();
                match vars.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Looks up `Resources[0].name.familyName` in a JSON value.
pub fn lookup<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = json;
    for part in path.split('.') {
        let (name, mut indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        while let Some(stripped) = indexes.strip_prefix('[') {
            let end = stripped.find(']')?;
            cur = cur.get(stripped[..end].parse::<usize>().ok()?)?;
            indexes = &stripped[end + 1..];
        }
    }
    Some(cur)
}

/// A JSON value as Runscope compares it: strings bare, everything else as JSON text.
fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        Some(_) => false,
    }
}

struct Response {
    status: u16,
    millis: f64,
    headers: reqwest::header::HeaderMap,
    text: String,
    json: Option<Value>,
}

/// Evaluates one assertion; `Err` says why it failed.
fn check(a: &Assertion, r: &Response, vars: &HashMap<String, String>) -> Result<(), String> {
    let expected = a.value.as_ref().map(|v| interpolate(&stringify(v), vars));
    let prop = a.property.as_deref().unwrap_or("");
    let describe = || format!("{} {prop} {}", a.source, a.comparison);
    let actual: Option<Value> = match a.source.as_str() {
        "response_status" => Some(Value::from(r.status)),
        "response_time" => Some(Value::from(r.millis)),
        "response_text" => Some(Value::String(r.text.clone())),
        "response_headers" => r.headers.get(prop).and_then(|v| v.to_str().ok()).map(|s| Value::String(s.to_owned())),
        "response_json" => match &r.json {
            Some(json) if prop.is_empty() => Some(json.clone()),
            Some(json) => lookup(json, prop).cloned(),
            None => return Err(format!("{}: the response is not JSON", describe())),
        },
        other => return Err(format!("unsupported assertion source {other}")),
    };
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let expect_num = || expected.as_deref().and_then(|e| e.parse::<f64>().ok());
    let ok = match a.comparison.as_str() {
        "equal_number" => {
            matches!((actual.as_ref().and_then(number), expect_num()), (Some(x), Some(y)) if x == y)
        }
        "equal" => actual.as_ref().map(stringify) == expected,
        "not_equal" => actual.as_ref().map(stringify) != expected,
        "not_empty" => !is_empty(actual.as_ref()),
        "empty" => is_empty(actual.as_ref()),
        "is_a_number" => matches!(actual, Some(Value::Number(_))),
        "is_less_than" => {
            matches!((actual.as_ref().and_then(number), expect_num()), (Some(x), Some(y)) if x < y)
        }
        "is_less_than_or_equal" => {
            matches!((actual.as_ref().and_then(number), expect_num()), (Some(x), Some(y)) if x <= y)
        }
        "is_greater_than" => {
            matches!((actual.as_ref().and_then(number), expect_num()), (Some(x), Some(y)) if x > y)
        }
        "has_value" | "contains" => match (&actual, &expected) {
            (Some(Value::Array(items)), Some(e)) => items.iter().any(|i| stringify(i) == *e),
            (Some(Value::String(s)), Some(e)) => s.contains(e.as_str()),
            _ => false,
        },
        "does_not_contain" => match (&actual, &expected) {
            (Some(Value::Array(items)), Some(e)) => !items.iter().any(|i| stringify(i) == *e),
            (Some(Value::String(s)), Some(e)) => !s.contains(e.as_str()),
            _ => true,
        },
        other => return Err(format!("unsupported comparison {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} {} {}: expected {:?}, got {}",
            a.source,
            prop,
            a.comparison,
            expected.unwrap_or_default(),
            actual.map_or_else(|| "nothing".to_owned(), |v| v.to_string())
        ))
    }
}

/// Runs every step of a suite.
pub async fn run(suite: &Suite, mut vars: HashMap<String, String>) -> Report {
    let http = reqwest::Client::new();
    let mut steps = Vec::new();
    for step in &suite.steps {
        let Step::Request(step) = step else { continue };
        if step.skipped {
            continue;
        }
        let url = interpolate(&step.url, &vars);
        let mut req = http.request(step.method.parse().unwrap_or(reqwest::Method::GET), &url);
        for (name, values) in &step.headers {
            for v in values {
                req = req.header(name.as_str(), interpolate(v, &vars));
            }
        }
        if let Some(body) = &step.body {
            req = req.body(interpolate(body, &vars));
        }
        let started = Instant::now();
        let mut report = StepReport {
            note: interpolate(&step.note, &vars),
            method: step.method.clone(),
            url: url.clone(),
            status: 0,
            assertions: step.assertions.len(),
            failures: Vec::new(),
            scripts_not_run: step.scripts.iter().filter(|s| !s.trim().is_empty()).count(),
        };
        let response = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                let json = serde_json::from_str(&text).ok();
                Response { status, millis, headers, text, json }
            }
            Err(e) => {
                report.failures.push(format!("request failed: {e}"));
                steps.push(report);
                continue;
            }
        };
        report.status = response.status;
        for a in &step.assertions {
            if let Err(why) = check(a, &response, &vars) {
                report.failures.push(why);
            }
        }
        for v in &step.variables {
            let value = match (v.source.as_str(), &response.json, v.property.as_deref()) {
                ("response_json", Some(json), Some(p)) => lookup(json, p).map(stringify),
                ("response_status", _, _) => Some(response.status.to_string()),
                _ => None,
            };
            match value {
                Some(value) => {
                    vars.insert(v.name.clone(), value);
                }
                None => report.failures.push(format!("variable {} could not be extracted", v.name)),
            }
        }
        steps.push(report);
    }
    Report { suite: suite.name.clone(), steps }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn interpolation_and_lookup() {
        let vars = HashMap::from([("a".to_owned(), "1".to_owned())]);
        assert_eq!(interpolate("x{{a}}y{{ b }}z{{", &vars), "x1y{{ b }}z{{");
        let j = json!({"Resources": [{"name": {"familyName": "Doe"}, "emails": [{"value": "e"}]}]});
        assert_eq!(lookup(&j, "Resources[0].name.familyName"), Some(&json!("Doe")));
        assert_eq!(lookup(&j, "Resources[0].emails[0].value"), Some(&json!("e")));
        assert_eq!(lookup(&j, "Resources[1].id"), None);
    }

    fn resp(status: u16, body: Value) -> Response {
        Response { status, millis: 5.0, headers: Default::default(), text: body.to_string(), json: Some(body) }
    }

    fn assertion(comparison: &str, source: &str, property: Option<&str>, value: Option<Value>) -> Assertion {
        Assertion { comparison: comparison.into(), source: source.into(), property: property.map(Into::into), value }
    }

    #[test]
    fn comparisons_follow_runscope() {
        let vars = HashMap::new();
        let r = resp(201, json!({"active": true, "totalResults": 0, "schemas": ["urn:a"], "status": "401", "s": "5"}));
        let ok = |a: Assertion| check(&a, &r, &vars).is_ok();
        assert!(ok(assertion("equal_number", "response_status", None, Some(json!("201")))));
        assert!(!ok(assertion("equal_number", "response_status", None, Some(json!("200")))));
        assert!(ok(assertion("equal", "response_json", Some("active"), Some(json!("true")))));
        assert!(ok(assertion("equal", "response_json", Some("totalResults"), Some(json!("0")))));
        assert!(ok(assertion("equal", "response_json", Some("status"), Some(json!("401")))));
        assert!(ok(assertion("has_value", "response_json", Some("schemas"), Some(json!("urn:a")))));
        assert!(!ok(assertion("has_value", "response_json", Some("schemas"), Some(json!("urn:b")))));
        assert!(ok(assertion("is_a_number", "response_json", Some("totalResults"), None)));
        assert!(!ok(assertion("is_a_number", "response_json", Some("s"), None)), "a numeric string is not a number");
        assert!(ok(assertion("not_empty", "response_json", Some("active"), None)));
        assert!(!ok(assertion("not_empty", "response_json", Some("missing"), None)));
        assert!(ok(assertion("is_less_than", "response_time", None, Some(json!("600")))));
        assert!(!ok(assertion("frobnicates", "response_json", Some("active"), None)), "unknown comparisons fail");
    }

    #[test]
    fn spec_variables_look_like_the_initial_script() {
        let v = spec_variables("http://x", "Basic y");
        assert!(v["randomGivenName"].starts_with("Runscope") && v["randomGivenName"].len() == 11);
        let fam = &v["randomFamilyName"];
        assert_eq!(fam.len(), 12);
        assert!(fam.chars().next().unwrap().is_ascii_uppercase());
        assert!(fam[1..9].chars().all(|c| c.is_ascii_lowercase()) && fam[9..].chars().all(|c| c.is_ascii_digit()));
        assert_eq!(v["randomUsernameCaps"], v["randomUsername"].to_uppercase());
        assert!(v["randomEmail"].ends_with("@atko.com"));
    }
}
