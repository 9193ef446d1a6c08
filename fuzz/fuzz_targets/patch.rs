//! Any JSON body: the PATCH parser and engine never panic, a failed PATCH leaves the document
//! untouched, and a password never ends up in the document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim::{PatchRequest, UserDocument};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(request) = PatchRequest::parse(&body) else { return };
    let mut doc = UserDocument::from_request(serde_json::json!({
        "userName": "jane", "name": {"givenName": "J", "familyName": "D"},
        "emails": [{"value": "j@x.y", "type": "work", "primary": true}], "active": true
    }))
    .expect("a valid user");
    let before = doc.clone();
    match doc.patch(&request) {
        Ok(()) => assert!(doc.as_map().get("password").is_none()),
        Err(_) => assert_eq!(doc, before, "a failed PATCH changes nothing"),
    }
});
