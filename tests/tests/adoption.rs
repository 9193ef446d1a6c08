//! Users that existed before provisioning was switched on (the seed article's FAQ): they are part
//! of the tenant's SCIM view, Okta links them (PUT with its externalId, or a POST under the
//! tenant's `adopt` policy) instead of duplicating them, and from then on deactivation and
//! reactivation work as for any provisioned user. Unlinked users are listed for support.

use e2e::{Okta, TestStack};
use proto::events::v1::Source;
use serde_json::{Value, json};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn admin_creates(okta: &Okta, user_name: &str) -> Value {
    let r = okta
        .http
        .post(okta.base.replace("/scim/v2", "/api/v1/users"))
        .header("Authorization", &okta.auth)
        .json(&json!({"userName": user_name, "givenName": "Pre", "familyName": "Existing", "email": user_name}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn unlinked(okta: &Okta) -> Vec<String> {
    let r: Value = okta
        .http
        .get(okta.base.replace("/scim/v2", "/api/v1/users/unlinked"))
        .header("Authorization", &okta.auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["users"].as_array().unwrap().iter().map(|u| u["userName"].as_str().unwrap().to_owned()).collect()
}

fn okta_body(user_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": user_name,
        "name": {"givenName": "Okta", "familyName": "Profile"},
        "emails": [{"primary": true, "value": user_name, "type": "work"}],
        "externalId": external_id,
        "active": true,
        "password": "random"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_created_users_are_found_linked_and_then_provisioned() {
    let stack = TestStack::start().await;
    let okta = stack.okta();

    // The customer's admin created Jonah before provisioning.
    let jonah = admin_creates(&okta, "jonah.hale@acme.com").await;
    assert_eq!(jonah["source"], "admin");
    let id = jonah["id"].as_str().unwrap().to_owned();
    assert_eq!(unlinked(&okta).await, ["jonah.hale@acme.com"]);

    // D1: Okta's filter finds him (and listing shows him) instead of creating a duplicate.
    let found = okta.get("/Users?filter=userName%20eq%20%22Jonah.Hale%40acme.com%22&startIndex=1&count=100").await;
    assert_eq!(
        (found.body["totalResults"].as_u64(), found.body["Resources"][0]["id"].as_str()),
        (Some(1), Some(id.as_str()))
    );
    assert_eq!(okta.get("/Users").await.body["totalResults"], 1);

    // D3: the PUT carrying Okta's externalId links him.
    let mut put = found.body["Resources"][0].clone();
    put["externalId"] = json!("00u1jonah");
    put["title"] = json!("Manager");
    let linked = okta.put(&format!("/Users/{id}"), put).await;
    assert_eq!((linked.status, &linked.body["externalId"]), (200, &json!("00u1jonah")));
    assert!(unlinked(&okta).await.is_empty(), "linked users are not listed");

    // From now on Okta deprovisions and restores him like anyone it provisioned.
    let deactivate = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": false}}]});
    assert_eq!(okta.patch(&format!("/Users/{id}"), deactivate).await.body["active"], false);
    let reactivate = json!({"schemas": [PATCH], "Operations": [{"op": "replace", "value": {"active": true}}]});
    assert_eq!(okta.patch(&format!("/Users/{id}"), reactivate).await.body["active"], true);

    // A POST whose userName is an admin-created user adopts that user (the default policy).
    let late = admin_creates(&okta, "late.comer@acme.com").await;
    let adopted = okta.post("/Users", okta_body("Late.Comer@acme.com", "00u2late")).await;
    assert_eq!(adopted.status, 201, "{:?}", adopted.body);
    assert_eq!(adopted.body["id"], late["id"], "the existing user, not a new one");
    assert_eq!(
        (adopted.body["externalId"].as_str(), adopted.body["name"]["givenName"].as_str()),
        (Some("00u2late"), Some("Okta"))
    );
    assert_eq!(adopted.body["userName"], "Late.Comer@acme.com", "Okta's profile now, as sent");
    // ...but a SCIM user's userName is still taken.
    assert_eq!(okta.post("/Users", okta_body("late.comer@acme.com", "00u3dup")).await.status, 409);

    // Under the `conflict` policy, the POST is a 409 and the admin's user stays unlinked.
    stack.store().set_adoption_policy("acme", "conflict").await.unwrap();
    admin_creates(&okta, "strict@acme.com").await;
    let refused = okta.post("/Users", okta_body("strict@acme.com", "00u4strict")).await;
    assert_eq!((refused.status, &refused.body["scimType"]), (409, &json!("uniqueness")));
    assert_eq!(unlinked(&okta).await, ["strict@acme.com"]);

    // A link that also archives (Okta pushing a user it has deactivated) says both.
    let gone = admin_creates(&okta, "gone@acme.com").await;
    let gone_id = gone["id"].as_str().unwrap();
    let mut put = okta_body("gone@acme.com", "00u5gone");
    put["active"] = json!(false);
    let archived = okta.put(&format!("/Users/{gone_id}"), put).await;
    assert_eq!((archived.status, &archived.body["active"]), (200, &json!(false)));

    // The events: linked, never a second created; and linking sends no email.
    let events = stack.settled_events().await;
    let of = |uid: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.envelope.resource_id == uid)
            .map(|e| e.subject.split(".user.").nth(1).unwrap().to_owned())
            .collect()
    };
    assert_eq!(of(&id), ["created", "linked", "deactivated", "reactivated"]);
    assert_eq!(of(late["id"].as_str().unwrap()), ["created", "linked"]);
    assert_eq!(of(gone_id), ["created", "linked", "deactivated"]);
    let created = events.iter().find(|e| e.envelope.resource_id == id).unwrap();
    assert_eq!(created.envelope.source, Source::Admin as i32, "created by the customer's admin");
    let linked = events.iter().find(|e| e.subject.ends_with(".user.linked")).unwrap();
    assert_eq!(linked.envelope.source, Source::Scim as i32, "provisioned by SCIM from now on");
    let decisions = stack.wait_for_decisions(events.len()).await;
    let linked_decision = decisions.iter().find(|d| d.event_type == "user.linked").unwrap();
    assert_eq!(
        (linked_decision.outcome.as_str(), linked_decision.reason.as_str()),
        ("suppressed", "welcome_suppressed_linked_by_scim")
    );
    stack.stop().await;
}
