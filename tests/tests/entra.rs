//! Microsoft Entra's documented request shapes (../shared/okta/OKTA.md §6), each against the live
//! gateway: capitalised ops, string booleans, one op per path (value filters, dotted and
//! URN-qualified paths), the path-less form with dotted and URN keys, `externalId` and email
//! lookups, bare-string managers, `$ref: null` members, remove-with-value, and hard deletes.

use e2e::TestStack;
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn ops(ops: Value) -> Value {
    json!({"schemas": [PATCH], "Operations": ops})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_provisioning_shapes() {
    let stack = TestStack::start().await;
    let entra = stack.okta();

    // Test connection: a random user and group that do not exist -> 200 empty lists.
    let probe = entra.get("/Users?filter=userName+eq+%22e5d2c3f1-1c6e-4c7e-9f0a-7b1f0d2e3a4b%22").await;
    assert_eq!((probe.status, &probe.body["totalResults"]), (200, &json!(0)));
    let probe = entra.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22AzureAD%22").await;
    assert_eq!((probe.status, &probe.body["totalResults"]), (200, &json!(0)));

    // Create: externalId (mailNickname), the extension listed in schemas, roles [], meta, a bare manager.
    let created = entra
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENT],
                "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
                "userName": "Test_User_ab6490ee@contoso.com",
                "active": true,
                "emails": [{"primary": true, "type": "work", "value": "Test_User_ab6490ee@contoso.com"}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "givenName familyName", "familyName": "familyName", "givenName": "givenName"},
                "roles": [],
                ENT: {"employeeNumber": "123", "manager": "Test_User_mgr"}
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body[ENT]["manager"]["value"], "Test_User_mgr", "a bare-string manager is its value");
    let path = format!("/Users/{id}");

    // Lookups Entra sends: externalId (quoted and unquoted), the work email by value filter.
    for query in [
        "externalId+eq+%220a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef%22",
        "externalId+eq+0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "emails%5Btype+eq+%22work%22%5D.value+eq+%22Test_User_ab6490ee%40contoso.com%22",
        "userName+eq+%22test_user_ab6490ee%40contoso.com%22",
    ] {
        let found = entra.get(&format!("/Users?filter={query}")).await;
        assert_eq!(found.body["totalResults"], 1, "{query}: {:?}", found.body);
        assert_eq!(found.body["Resources"][0]["id"], id);
    }
    // externalId is case-exact.
    let other_case = entra.get("/Users?filter=externalId+eq+%220A21F0F2-8D2A-4F8E-BF98-7363C4AED4EF%22").await;
    assert_eq!(other_case.body["totalResults"], 0);

    // Single-valued add means set; one op per path without the flag.
    let r = entra.patch(&path, ops(json!([{"op": "Add", "path": "nickName", "value": "Babs"}]))).await;
    assert_eq!((r.status, &r.body["nickName"]), (200, &json!("Babs")));
    let r = entra
        .patch(
            &path,
            ops(json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "updatedEmail@microsoft.com"},
                {"op": "Replace", "path": "name.givenName", "value": "updatedGivenName"},
                {"op": "Replace", "path": "externalId", "value": "updatedExternalId"},
                {"op": "Replace", "path": format!("{ENT}:employeeNumber"), "value": "456"}
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["emails"][0]["value"], "updatedEmail@microsoft.com");
    assert_eq!(r.body["name"]["givenName"], "updatedGivenName");
    assert_eq!(r.body["name"]["familyName"], "familyName");
    assert_eq!(r.body["externalId"], "updatedExternalId");
    assert_eq!(r.body[ENT]["employeeNumber"], "456");
    assert_eq!(r.body[ENT]["manager"]["value"], "Test_User_mgr");

    // With aadOptscim062020: one path-less replace with dotted and URN-qualified keys.
    let r = entra
        .patch(
            &path,
            ops(json!([{"op": "replace", "value": {
                "name.givenName": "Flagged",
                "name.familyName": "Shape",
                format!("{ENT}:department"): "Finance",
                "active": false
            }}])),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (r.body["name"]["givenName"].as_str(), r.body["name"]["familyName"].as_str()),
        (Some("Flagged"), Some("Shape"))
    );
    assert_eq!((r.body[ENT]["department"].as_str(), r.body["active"].as_bool()), (Some("Finance"), Some(false)));
    // Without the flag: capitalised op, string boolean.
    let r = entra.patch(&path, ops(json!([{"op": "Replace", "path": "active", "value": "True"}]))).await;
    assert_eq!(r.body["active"], true);

    // Groups: created, members added with "$ref": null, removed with a value list (no flag).
    let g = entra
        .post(
            "/Groups",
            json!({"displayName": "Entra Group", "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159", "members": []}),
        )
        .await;
    assert_eq!(g.status, 201, "{:?}", g.body);
    let gpath = format!("/Groups/{}", g.body["id"].as_str().unwrap());
    let add = entra
        .patch(&gpath, ops(json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": id}]}])))
        .await;
    assert_eq!(add.status, 204, "Entra prefers 204 for group PATCH: {:?}", add.body);
    let got = entra.get(&gpath).await;
    assert_eq!(got.body["members"][0]["value"], id.as_str());
    let remove = entra.patch(&gpath, ops(json!([{"op": "Remove", "path": "members", "value": [{"value": id}]}]))).await;
    assert_eq!(remove.status, 204);
    let found = entra.get("/Groups?excludedAttributes=members&filter=displayName+eq+%22Entra+Group%22").await;
    assert_eq!(found.body["totalResults"], 1);
    assert!(found.body["Resources"][0].get("members").is_none());
    entra.patch(&gpath, ops(json!([{"op": "Add", "path": "members", "value": [{"value": id}]}]))).await;

    // Hard delete: 204, then 404 everywhere, and gone from its groups.
    let deleted = entra.send("DELETE", &path, None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(entra.get(&path).await.status, 404);
    assert_eq!(entra.get("/Users?filter=externalId+eq+%22updatedExternalId%22").await.body["totalResults"], 0);
    assert_eq!(entra.get(&gpath).await.body["members"], json!([]));
    assert_eq!(entra.send("DELETE", &path, None).await.status, 404);
    let events = stack.settled_events().await;
    assert_eq!(events.iter().filter(|e| e.subject.ends_with(".user.deleted")).count(), 1);
    stack.stop().await;
}
