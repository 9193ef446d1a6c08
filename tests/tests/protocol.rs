//! The rest of SCIM 2.0 (RFC 7643/7644) over HTTP: versions and ETags, paging, sorting,
//! projection, searches, limits, discovery, round-tripping of attributes outside the schemas, and
//! our own extension.

use e2e::{Okta, TestStack};
use serde_json::{Value, json};

const LRN: &str = "urn:ietf:params:scim:schemas:extension:learning:2.0:User";

async fn user(okta: &Okta, name: &str, extra: Value) -> Value {
    let mut body = json!({
        "userName": format!("{name}@acme.com"),
        "name": {"givenName": name, "familyName": "Test"},
        "emails": [{"value": format!("{name}@acme.com"), "primary": true}],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let r = okta.post("/Users", body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

fn ids(reply: &Value) -> Vec<String> {
    reply["Resources"].as_array().unwrap().iter().map(|r| r["userName"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_paging_sorting_projection_and_search() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    for name in ["eve", "bob", "dan", "amy", "cat"] {
        user(&okta, name, json!({})).await;
    }

    // ETags: If-Match guards writes, If-None-Match answers 304.
    let amy = okta.get("/Users?filter=userName+eq+%22amy%40acme.com%22").await.body["Resources"][0].clone();
    let path = format!("/Users/{}", amy["id"].as_str().unwrap());
    let etag = amy["meta"]["version"].as_str().unwrap().to_owned();
    let stale = okta
        .http
        .patch(format!("{}{path}", okta.base))
        .header("Authorization", &okta.auth)
        .header("If-Match", "W/\"99\"")
        .header("Content-Type", "application/scim+json")
        .body(json!({"Operations": [{"op": "replace", "path": "title", "value": "x"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let fresh = okta
        .http
        .put(format!("{}{path}", okta.base))
        .header("Authorization", &okta.auth)
        .header("If-Match", &etag)
        .header("Content-Type", "application/scim+json")
        .body(
            json!({"userName": "amy@acme.com", "name": {"givenName": "amy", "familyName": "Test"}, "title": "Lead"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), 200);
    let new_etag = fresh.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let cached = okta
        .http
        .get(format!("{}{path}", okta.base))
        .header("Authorization", &okta.auth)
        .header("If-None-Match", &new_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let changed = okta
        .http
        .get(format!("{}{path}", okta.base))
        .header("Authorization", &okta.auth)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    // Paging: itemsPerPage is what is returned, the order is stable, past the end is empty.
    let mut seen = Vec::new();
    for (start, expected) in [(1, 2), (3, 2), (5, 1), (6, 0)] {
        let page = okta.get(&format!("/Users?startIndex={start}&count=2")).await.body;
        assert_eq!((page["totalResults"].as_u64(), page["itemsPerPage"].as_u64()), (Some(5), Some(expected)));
        assert_eq!(page["startIndex"], start);
        seen.extend(ids(&page));
    }
    assert_eq!(seen, ["eve", "bob", "dan", "amy", "cat"].map(|n| format!("{n}@acme.com")), "creation order, no gaps");
    let counted = okta.get("/Users?count=0").await.body;
    assert_eq!((counted["totalResults"].as_u64(), counted["Resources"].as_array().map(Vec::len)), (Some(5), Some(0)));
    assert_eq!(okta.get("/Users?count=100000").await.body["itemsPerPage"], 5, "count is capped, not refused");

    // Sorting.
    let sorted = okta.get("/Users?sortBy=userName&sortOrder=descending").await.body;
    assert_eq!(ids(&sorted), ["eve", "dan", "cat", "bob", "amy"].map(|n| format!("{n}@acme.com")));
    assert_eq!(okta.get("/Users?sortBy=userName&sortOrder=sideways").await.status, 400);
    let mut walked = Vec::new();
    for start in [1, 3, 5] {
        let path = format!("/Users?sortBy=userName&sortOrder=descending&startIndex={start}&count=2");
        walked.extend(ids(&okta.get(&path).await.body));
    }
    assert_eq!(walked, ids(&sorted), "sorted before the pages are cut");

    // Projection.
    let slim = okta.get(&format!("{path}?attributes=userName,name.givenName")).await.body;
    let keys: Vec<&str> = slim.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["schemas", "id", "userName", "name"]);
    assert_eq!(slim["name"], json!({"givenName": "amy"}));
    let no_emails = okta.get("/Users?excludedAttributes=emails,meta&count=1").await.body;
    assert!(no_emails["Resources"][0].get("emails").is_none() && no_emails["Resources"][0].get("meta").is_none());
    assert_eq!(okta.get("/Users?attributes=userName&excludedAttributes=emails").await.status, 400);

    // Searches, on a resource type and at the root.
    let search = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": "userName sw \"d\" or userName sw \"e\"",
                        "attributes": ["userName"], "sortBy": "userName", "startIndex": 1, "count": 10});
    let found = okta.post("/Users/.search", search.clone()).await;
    assert_eq!((found.status, ids(&found.body)), (200, vec!["dan@acme.com".to_owned(), "eve@acme.com".to_owned()]));
    okta.post("/Groups", json!({"displayName": "Readers"})).await;
    let everything = okta
        .post("/.search", json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "count": 100}))
        .await
        .body;
    assert_eq!(everything["totalResults"], 6, "five users and one group");
    let root = |filter: &str| {
        okta.post(
            "/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": filter}),
        )
    };
    let group_hit = root("displayName eq \"Readers\"").await.body;
    assert_eq!(
        (group_hit["totalResults"].as_u64(), group_hit["Resources"][0]["displayName"].as_str()),
        (Some(1), Some("Readers"))
    );
    // userName means nothing to a group: the groups simply do not match.
    let user_hit = root("userName sw \"a\"").await.body;
    assert_eq!(
        (user_hit["totalResults"].as_u64(), user_hit["Resources"][0]["userName"].as_str()),
        (Some(1), Some("amy@acme.com"))
    );
    // A sortBy only users have sorts the users' part; one neither type has is an error.
    let sorted = |sort_by: &str| {
        okta.post(
            "/.search",
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "sortBy": sort_by, "sortOrder": "descending"}),
        )
    };
    let by_user_name = sorted("userName").await;
    assert_eq!((by_user_name.status, &by_user_name.body["totalResults"]), (200, &json!(6)));
    assert_eq!(by_user_name.body["Resources"][0]["userName"], "eve@acme.com");
    assert_eq!(by_user_name.body["Resources"][5]["displayName"], "Readers");
    assert_eq!(sorted("members").await.status, 400);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_limits_round_trips_and_our_extension() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let anonymous = Okta { auth: String::new(), ..okta.clone() };

    // Discovery needs no credentials and says what is implemented.
    let spc = anonymous.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, 200);
    assert_eq!(
        (spc.body["patch"]["supported"].as_bool(), spc.body["bulk"]["supported"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(spc.body["filter"]["maxResults"], 1000);
    let types = anonymous.get("/ResourceTypes").await.body;
    assert_eq!(types["totalResults"], 2);
    let schemas = anonymous.get("/Schemas").await.body;
    let ids: Vec<&str> = schemas["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&LRN), "{ids:?}");
    assert_eq!(anonymous.get("/Schemas/urn:nope").await.status, 404);
    // Okta's old suite: a non-JSON POST to a discovery endpoint is 405, not 400.
    for endpoint in ["/ServiceProviderConfig", "/Schemas", "/ResourceTypes"] {
        let r = okta.http.post(format!("{}{endpoint}", okta.base)).body("test\r\n\r\n").send().await.unwrap();
        assert_eq!(r.status(), 405, "{endpoint}");
    }
    assert_eq!(okta.send("POST", "/Bulk", Some(json!({}))).await.status, 501);

    // Limits: an oversized body is 413 with a SCIM body.
    let big = json!({"userName": "big@acme.com", "title": "x".repeat(2 * 1024 * 1024)});
    let r = okta.post("/Users", big).await;
    assert_eq!((r.status, &r.body["status"]), (413, &json!("413")));

    // Attributes outside the schemas round-trip; our extension round-trips and filters.
    let u = user(
        &okta,
        "kim",
        json!({"x-badgeColour": {"primary": "blue"}, LRN: {"hireDate": "2024-03-01", "customFields": {"badge": "B-7", "floor": "3"}}}),
    )
    .await;
    assert_eq!(u["x-badgeColour"], json!({"primary": "blue"}));
    assert!(u["schemas"].as_array().unwrap().contains(&json!(LRN)));
    assert_eq!(u[LRN]["customFields"]["badge"], "B-7");
    let id = u["id"].as_str().unwrap();
    let patched = okta
        .patch(
            &format!("/Users/{id}"),
            json!({"Operations": [{"op": "replace", "path": format!("{LRN}:customFields.floor"), "value": "4"}]}),
        )
        .await;
    assert_eq!(patched.body[LRN]["customFields"], json!({"badge": "B-7", "floor": "4"}));
    for (filter, expected) in [
        (format!("{LRN}:customFields.badge eq \"b-7\""), 1),
        (format!("{LRN}:hireDate ge \"2024-01-01\""), 1),
        (format!("{LRN}:customFields.badge eq \"B-8\""), 0),
    ] {
        let url = format!("/Users?filter={}", filter.replace(' ', "%20").replace('"', "%22"));
        assert_eq!(okta.get(&url).await.body["totalResults"], expected, "{filter}");
    }
    stack.stop().await;
}
