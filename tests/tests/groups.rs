//! Groups and Okta Group Push (../shared/okta/OKTA.md flow I), end to end: the OIN PATCH flow,
//! the AIW PUT flow, Push Now on an empty group, a 1,000-member PATCH, concurrent PATCHes, member
//! validation, deletion, and the events each step produces.

use std::collections::BTreeSet;

use e2e::{Okta, TestStack};
use proto::events::v1::envelope::Payload;
use serde_json::{Value, json};

const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn user(okta: &Okta, name: &str) -> String {
    let reply = okta
        .post(
            "/Users",
            json!({
                "userName": format!("{name}@acme.com"),
                "name": {"givenName": name, "familyName": "Test"},
                "emails": [{"value": format!("{name}@acme.com"), "primary": true}],
            }),
        )
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.body["id"].as_str().unwrap().to_owned()
}

fn members(group: &Value) -> BTreeSet<String> {
    group["members"]
        .as_array()
        .map_or_else(BTreeSet::new, |m| m.iter().map(|m| m["value"].as_str().unwrap().to_owned()).collect())
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).clone()).collect()
}

fn patch(ops: Value) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// A group PATCH as Okta sends it: answered 204 (no member list), then read back.
async fn push(okta: &Okta, path: &str, ops: Value) -> e2e::Reply {
    let r = okta.patch(path, patch(ops)).await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert!(r.headers.contains_key("etag"));
    okta.get(path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_group_push_oin_flow() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let (u1, u2, u3) = (user(&okta, "ann").await, user(&okta, "bob").await, user(&okta, "cy").await);

    // I1: the existence check finds nothing; I2: create, with no members.
    let found = okta.get("/Groups?filter=displayName%20eq%20%22Sales%22&startIndex=1&count=100").await;
    assert_eq!((found.status, &found.body["totalResults"]), (200, &json!(0)));
    let created = okta.post("/Groups", json!({"schemas": [GROUP_SCHEMA], "displayName": "Sales", "members": []})).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let g = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["displayName"], "Sales");
    assert_eq!(created.body["members"], json!([]));
    assert_eq!(created.body["meta"]["resourceType"], "Group");
    assert_eq!(created.headers["location"].to_str().unwrap(), format!("{}/Groups/{g}", stack.base_url));
    // displayName is unique per tenant, whatever the case; the filter ignores case too.
    let dup = okta.post("/Groups", json!({"displayName": "SALES"})).await;
    assert_eq!((dup.status, &dup.body["scimType"]), (409, &json!("uniqueness")));
    let found = okta.get("/Groups?filter=displayName+eq+%22sales%22").await;
    assert_eq!(found.body["Resources"][0]["id"], g);

    // I3: replace {id, displayName} (the id is ignored), then incremental membership (I4).
    let path = format!("/Groups/{g}");
    let r = push(&okta, &path, json!([{"op": "replace", "value": {"id": g, "displayName": "Sales"}}])).await;
    assert_eq!(r.body["meta"]["version"], json!("W/\"1\""), "renaming to the same name changes nothing");
    let r = push(
        &okta,
        &path,
        json!([
            {"op": "add", "path": "members", "value": [{"value": u1, "display": "ann@acme.com"}, {"value": u2, "display": "bob@acme.com"}]}
        ]),
    )
    .await;
    assert_eq!(members(&r.body), set(&[&u1, &u2]));
    let m = r.body["members"].as_array().unwrap().iter().find(|m| m["value"] == u1.as_str()).unwrap();
    assert_eq!(m["display"], "ann@acme.com", "display is kept as Okta sent it");
    // A PATCH that asks for a representation gets one.
    let shown = okta
        .patch(
            &format!("{path}?excludedAttributes=members"),
            patch(json!([{"op": "add", "path": "externalId", "value": "okta-g1"}])),
        )
        .await;
    assert_eq!((shown.status, &shown.body["externalId"]), (200, &json!("okta-g1")));
    assert!(shown.body.get("members").is_none());
    assert_eq!(m["$ref"], format!("{}/Users/{u1}", stack.base_url));
    // Several operations in one request; removing a non-member and re-adding a member change nothing.
    let r = push(
        &okta,
        &path,
        json!([
            {"op": "remove", "path": format!("members[value eq \"{u1}\"]")},
            {"op": "remove", "path": "members[value eq \"not-a-member\"]"},
            {"op": "add", "path": "members", "value": [{"value": u2}, {"value": u3}]}
        ]),
    )
    .await;
    assert_eq!(members(&r.body), set(&[&u2, &u3]));
    // A user sees their groups.
    let bob = okta.get(&format!("/Users/{u2}")).await;
    assert_eq!(
        bob.body["groups"],
        json!([{"value": g, "display": "Sales", "type": "direct", "$ref": format!("{}/Groups/{g}", stack.base_url)}])
    );
    // So does a page of users, a page of one past the first too (a page is cut before its
    // groups are read).
    let mut listed = std::collections::HashMap::new();
    for start in 1..=3 {
        let page = okta.get(&format!("/Users?startIndex={start}&count=1")).await.body;
        let user = &page["Resources"][0];
        listed.insert(user["id"].as_str().unwrap().to_owned(), user["groups"].clone());
    }
    assert_eq!((&listed[&u1], &listed[&u2], &listed[&u3]), (&json!([]), &bob.body["groups"], &bob.body["groups"]));
    // So does the answer to a write of that user, whether it changed anything or not, and a PUT's.
    let rename = patch(json!([{"op": "replace", "path": "displayName", "value": "Bob B"}]));
    for _ in 0..2 {
        let r = okta.patch(&format!("/Users/{u2}"), rename.clone()).await;
        assert_eq!((r.status, &r.body["displayName"], &r.body["groups"]), (200, &json!("Bob B"), &bob.body["groups"]));
    }
    let mut whole = okta.get(&format!("/Users/{u2}")).await.body;
    whole["title"] = json!("Rep");
    let r = okta.put(&format!("/Users/{u2}"), whole).await;
    assert_eq!((r.status, &r.body["title"], &r.body["groups"]), (200, &json!("Rep"), &bob.body["groups"]));
    let r = okta.patch(&format!("/Users/{u2}?excludedAttributes=groups"), rename).await;
    assert_eq!((r.status, r.body.get("groups")), (200, None));
    // A member that is not a user of this tenant: 400 naming it, and nothing of the request applies.
    let globex_user = {
        let key = stack.add_tenant("globex").await;
        let globex = Okta { auth: e2e::basic("globex", &key), ..okta.clone() };
        user(&globex, "spy").await
    };
    let r = okta
        .patch(
            &path,
            patch(json!([
                {"op": "remove", "path": format!("members[value eq \"{u2}\"]")},
                {"op": "add", "path": "members", "value": [{"value": globex_user}]}
            ])),
        )
        .await;
    assert_eq!((r.status, &r.body["scimType"]), (400, &json!("invalidValue")), "{:?}", r.body);
    assert!(r.body["detail"].as_str().unwrap().contains(&globex_user));
    assert_eq!(members(&okta.get(&path).await.body), set(&[&u2, &u3]), "nothing applied");

    // I5: Push Now with the full list, then on an empty group (value []).
    let r = push(&okta, &path, json!([{"op": "replace", "path": "members", "value": [{"value": u1}]}])).await;
    assert_eq!(members(&r.body), set(&[&u1]));
    let r = push(&okta, &path, json!([{"op": "replace", "path": "members", "value": []}])).await;
    assert_eq!(members(&r.body), BTreeSet::new());
    // Entra's remove-with-value and the path-less add.
    push(&okta, &path, json!([{"op": "replace", "value": {"members": [{"value": u1, "$ref": null}, {"value": u2}]}}]))
        .await;
    let r = push(&okta, &path, json!([{"op": "Remove", "path": "members", "value": [{"value": u1}]}])).await;
    assert_eq!(members(&r.body), set(&[&u2]));
    // I6: rename; excludedAttributes=members leaves the members out.
    let r = push(&okta, &path, json!([{"op": "replace", "value": {"id": g, "displayName": "Sales EMEA"}}])).await;
    assert_eq!(r.body["displayName"], "Sales EMEA");
    let r = okta.get(&format!("{path}?excludedAttributes=members")).await;
    assert!(r.body.get("members").is_none());
    assert_eq!(r.body["displayName"], "Sales EMEA");
    let listed = okta.get("/Groups?excludedAttributes=members").await;
    assert!(listed.body["Resources"][0].get("members").is_none());

    // I7: delete, then 404; the users stay.
    let r = okta.send("DELETE", &path, None).await;
    assert_eq!(r.status, 204);
    assert_eq!(okta.get(&path).await.status, 404);
    assert_eq!(okta.get(&format!("/Users/{u2}")).await.body["groups"], json!([]));

    // One event per request, listing the members each added or removed.
    let events = stack.settled_events().await;
    assert_eq!(events.len(), 6 + 12, "6 user events (4 creations, bob's new name and title), 12 group events");
    let group_events: Vec<(&str, Vec<String>)> = events
        .iter()
        .filter(|e| e.subject.contains(".group."))
        .map(|e| {
            let kind = e.subject.rsplit('.').next().unwrap();
            let ids = match &e.envelope.payload {
                Some(Payload::GroupMembersAdded(a)) => a.user_ids.clone(),
                Some(Payload::GroupMembersRemoved(r)) => r.user_ids.clone(),
                _ => Vec::new(),
            };
            (kind, ids)
        })
        .collect();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let expected: Vec<(&str, Vec<String>)> = vec![
        ("created", vec![]),
        ("members_added", sorted(vec![u1.clone(), u2.clone()])),
        ("updated", vec![]),
        ("members_added", vec![u3.clone()]),
        ("members_removed", vec![u1.clone()]),
        ("members_added", vec![u1.clone()]),
        ("members_removed", sorted(vec![u2.clone(), u3.clone()])),
        ("members_removed", vec![u1.clone()]),
        ("members_added", sorted(vec![u1.clone(), u2.clone()])),
        ("members_removed", vec![u1.clone()]),
        ("updated", vec![]),
        ("deleted", vec![]),
    ];
    assert_eq!(group_events, expected);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiw_put_replaces_membership_and_a_put_without_members_keeps_it() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    let (u1, u2, u3) = (user(&okta, "ann").await, user(&okta, "bob").await, user(&okta, "cy").await);
    let created = okta
        .post(
            "/Groups",
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Eng", "members": [{"value": u1}, {"value": u2}]}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(members(&created.body), set(&[&u1, &u2]));
    let path = format!("/Groups/{}", created.body["id"].as_str().unwrap());
    let got = okta.get(&path).await.body;
    let put = okta
        .put(&path, json!({"schemas": [GROUP_SCHEMA], "displayName": "Eng", "members": [{"value": u2, "display": "bob"}, {"value": u3}]}))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(members(&put.body), set(&[&u2, &u3]));
    assert_ne!(put.body["meta"]["version"], got["meta"]["version"]);
    // A PUT that leaves members out never empties the group.
    let put = okta.put(&path, json!({"schemas": [GROUP_SCHEMA], "displayName": "Engineering"})).await;
    assert_eq!((put.body["displayName"].as_str(), members(&put.body)), (Some("Engineering"), set(&[&u2, &u3])));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_in_one_patch_and_concurrent_patches_lose_nobody() {
    let stack = TestStack::start().await;
    let okta = stack.okta();
    // 1,032 users, created straight in the store (the HTTP path is tested elsewhere).
    let tenant = stack.store().tenant_by_subdomain("acme").await.unwrap();
    let mut ids = Vec::new();
    for i in 0..1032 {
        let mut doc = scim::UserDocument::from_request(json!({
            "userName": format!("u{i}@acme.com"), "name": {"givenName": "U", "familyName": format!("{i}")},
            "emails": [{"value": format!("u{i}@acme.com")}]
        }))
        .unwrap();
        doc.validate_new().unwrap();
        ids.push(
            stack.store().create_user(&tenant, doc, proto::events::v1::Source::Scim).await.unwrap().id.to_string(),
        );
    }
    let g = okta.post("/Groups", json!({"displayName": "Everyone"})).await.body["id"].as_str().unwrap().to_owned();
    let path = format!("/Groups/{g}");
    let first: Vec<Value> = ids[..1000].iter().map(|id| json!({"value": id})).collect();
    let r = push(&okta, &path, json!([{"op": "add", "path": "members", "value": first}])).await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1000);

    // 32 concurrent PATCHes, each adding one more member and removing one of the first 1,000.
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (okta, path) = (okta.clone(), path.clone());
        let (add, remove) = (ids[1000 + i].clone(), ids[i].clone());
        tasks.push(tokio::spawn(async move {
            let body = patch(json!([
                {"op": "add", "path": "members", "value": [{"value": add}]},
                {"op": "remove", "path": format!("members[value eq \"{remove}\"]")}
            ]));
            okta.patch(&path, body).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 204);
    }
    let final_members = members(&okta.get(&path).await.body);
    let expected: BTreeSet<String> = ids[32..1032].iter().cloned().collect();
    assert_eq!(final_members.len(), 1000);
    assert_eq!(final_members, expected, "no member lost, none left behind");
    let version = okta.get(&format!("{path}?attributes=id")).await.body;
    assert_eq!(version["meta"], Value::Null, "attributes=id returns only the id and schemas");
    let got = okta.get(&path).await.body;
    assert_eq!(got["meta"]["version"], "W/\"34\"", "1 create + 1 bulk add + 32 patches, each its own version");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_takes_them_out_of_their_groups_visibly() {
    let stack = TestStack::start_with("1s", false).await;
    let okta = stack.okta();
    let (ann, bob) = (user(&okta, "ann").await, user(&okta, "bob").await);
    let mut groups = Vec::new();
    for name in ["Sales", "Support"] {
        let g = okta
            .post(
                "/Groups",
                json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": [{"value": ann}, {"value": bob}]}),
            )
            .await;
        assert_eq!(g.status, 201);
        groups.push((g.body["id"].as_str().unwrap().to_owned(), g.headers["etag"].clone()));
    }
    assert_eq!(okta.send("DELETE", &format!("/Users/{ann}"), None).await.status, 204);
    for (id, etag) in &groups {
        let g = okta.get(&format!("/Groups/{id}")).await;
        assert_eq!(members(&g.body), set(&[&bob]), "ann is gone from the group");
        assert_ne!(&g.headers["etag"], etag, "the group changed, so its version did");
    }
    // Each group says whom it lost, before the user's deletion.
    let events = stack.settled_events().await;
    for (id, _) in &groups {
        let removed: Vec<_> = events
            .iter()
            .filter(|e| e.envelope.resource_id == *id)
            .filter_map(|e| match &e.envelope.payload {
                Some(Payload::GroupMembersRemoved(r)) => Some((e.sequence, r.user_ids.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(removed.iter().map(|(_, ids)| ids.clone()).collect::<Vec<_>>(), [vec![ann.clone()]]);
        let deleted = events.iter().find(|e| e.subject.ends_with(".user.deleted")).unwrap();
        assert!(removed[0].0 < deleted.sequence);
    }
    stack.stop().await;
}
