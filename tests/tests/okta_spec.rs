//! Okta's own "SCIM 2.0 SPEC Test" suite (tests/okta/Okta-SCIM-20-SPEC-Test.json), replayed
//! against the live gateway: every required step must pass.

use e2e::TestStack;
use e2e::runscope::{Suite, run, spec_variables};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_spec_suite_passes_every_required_step() {
    let stack = TestStack::start().await;
    // The suite's precondition: the tenant already has a complete user.
    let seeded = stack
        .okta()
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "seed.user@acme.com",
                "name": {"givenName": "Seed", "familyName": "User"},
                "emails": [{"primary": true, "value": "seed.user@acme.com", "type": "work"}],
                "active": true
            }),
        )
        .await;
    assert_eq!(seeded.status, 201, "{:?}", seeded.body);

    let suite: Suite = serde_json::from_str(include_str!("../okta/Okta-SCIM-20-SPEC-Test.json")).unwrap();
    let vars = spec_variables(&stack.base_url, &stack.auth());
    let report = run(&suite, vars.clone()).await;
    println!("{}", report.summary());

    let required = report.steps.iter().filter(|s| s.required()).count();
    assert_eq!(required, 11, "the suite has 11 required steps");
    assert!(report.required_failures().is_empty(), "required steps failed:\n{}", report.summary());

    // The suite's user exists once, with the userName exactly as sent (mixed case).
    let found = stack.okta().get(&format!("/Users?filter=userName%20eq%20%22{}%22", vars["randomUsernameCaps"])).await;
    assert_eq!(found.body["totalResults"], 1);
    assert_eq!(found.body["Resources"][0]["userName"], vars["randomUsername"]);
    stack.stop().await;
}
