//! Any input: the filter parser never panics; whatever it accepts prints to a canonical form that
//! parses back to the same tree, and evaluating it against a user never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scim::filter::{MAX_LENGTH, Scope, matches, parse};
use scim::schema::USER_RESOURCE;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(filter) = parse(text) else { return };
    let printed = filter.to_string();
    // Escaping can make the canonical form longer than the input, and than the cap.
    if printed.len() <= MAX_LENGTH {
        let again = parse(&printed).expect("the canonical form parses");
        assert_eq!(again, filter, "round trip of {printed}");
    }
    let user = serde_json::json!({"userName": "a", "emails": [{"value": "x", "type": "work"}], "active": true});
    let _ = matches(&filter, &user, Scope::Resource(&USER_RESOURCE));
});
