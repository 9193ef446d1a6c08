//! Property tests of the SCIM core: every filter tree prints to a form that parses back to the
//! same tree, and the PATCH engine agrees with a deliberately naive reference model on random
//! sequences of operations.

use std::collections::BTreeMap;

use proptest::prelude::*;
use scim::filter::{AttrPath, CompValue, CompareOp, Filter, parse};
use scim::{PatchRequest, UserDocument};
use serde_json::{Value, json};

const NAMES: &[&str] = &["userName", "title", "emails", "name", "costCenter", "x_y-1", "Display9"];
const SUBS: &[&str] = &["value", "type", "givenName", "primary"];
const URN: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn attr_path(relative: bool) -> impl Strategy<Value = AttrPath> {
    let urn = if relative { Just(None).boxed() } else { prop::option::weighted(0.2, Just(URN.to_owned())).boxed() };
    let sub = if relative {
        Just(None).boxed()
    } else {
        prop::option::weighted(0.3, prop::sample::select(SUBS).prop_map(str::to_owned)).boxed()
    };
    (urn, prop::sample::select(NAMES), sub).prop_map(|(urn, name, sub)| AttrPath { urn, name: name.to_owned(), sub })
}

fn comp_value() -> impl Strategy<Value = CompValue> {
    prop_oneof![
        any::<String>().prop_map(CompValue::Str),
        "[a-z0-9@. ]{0,12}".prop_map(CompValue::Str),
        any::<i64>().prop_map(|n| CompValue::Num(n.into())),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| CompValue::Num(serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()))),
        any::<bool>().prop_map(CompValue::Bool),
        Just(CompValue::Null),
    ]
}

fn op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(CompareOp::ALL.to_vec())
}

fn filter_tree(relative: bool) -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        (attr_path(relative), op(), comp_value()).prop_map(|(p, o, v)| Filter::Compare(p, o, v)),
        attr_path(relative).prop_map(Filter::Present),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::And(Box::new(l), Box::new(r))),
            (inner.clone(), inner.clone()).prop_map(|(l, r)| Filter::Or(Box::new(l), Box::new(r))),
            inner.prop_map(|f| Filter::Not(Box::new(f))),
        ]
    })
}

fn any_filter() -> impl Strategy<Value = Filter> {
    prop_oneof![
        4 => filter_tree(false),
        1 => (prop::sample::select(NAMES), filter_tree(true)).prop_map(|(n, f)| Filter::ValuePath(AttrPath::simple(n), Box::new(f))),
        1 => (filter_tree(false), prop::sample::select(NAMES), filter_tree(true)).prop_map(|(l, n, f)| {
            Filter::And(Box::new(l), Box::new(Filter::ValuePath(AttrPath::simple(n), Box::new(f))))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn filters_print_and_parse_back_to_the_same_tree(f in any_filter()) {
        let printed = f.to_string();
        let parsed = parse(&printed).map_err(|e| TestCaseError::fail(format!("{printed}: {e}")))?;
        prop_assert_eq!(parsed, f, "printed as {}", printed);
    }
}

// ---- PATCH against a reference model ----

const SIMPLE: &[&str] = &["displayName", "nickName", "title", "userType", "locale", "timezone"];
const EMAILS: &[&str] = &["a@x.io", "b@x.io", "c@x.io"];
const TYPES: &[&str] = &["work", "home"];

/// The model: simple attributes, and emails as (value, type) pairs in order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    simple: BTreeMap<String, String>,
    emails: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Step {
    Set { add: bool, attr: &'static str, value: String },
    SetPathless { add: bool, values: BTreeMap<&'static str, String> },
    Remove { attr: &'static str },
    AddEmails(Vec<(&'static str, &'static str)>),
    ReplaceEmails(Vec<(&'static str, &'static str)>),
    RemoveEmail(&'static str),
    RemoveEmailsOfType(&'static str),
}

fn step() -> impl Strategy<Value = Step> {
    let email = (prop::sample::select(EMAILS), prop::sample::select(TYPES));
    prop_oneof![
        (any::<bool>(), prop::sample::select(SIMPLE), "[a-zA-Z ]{1,8}").prop_map(|(add, attr, value)| Step::Set {
            add,
            attr,
            value
        }),
        (any::<bool>(), prop::collection::btree_map(prop::sample::select(SIMPLE), "[a-z]{1,6}", 1..3))
            .prop_map(|(add, values)| Step::SetPathless { add, values }),
        prop::sample::select(SIMPLE).prop_map(|attr| Step::Remove { attr }),
        prop::collection::vec(email.clone(), 1..3).prop_map(Step::AddEmails),
        prop::collection::vec(email, 0..3).prop_map(Step::ReplaceEmails),
        prop::sample::select(EMAILS).prop_map(Step::RemoveEmail),
        prop::sample::select(TYPES).prop_map(Step::RemoveEmailsOfType),
    ]
}

fn email_json(list: &[(&str, &str)]) -> Value {
    Value::Array(list.iter().map(|(v, t)| json!({"value": v, "type": t})).collect())
}

impl Step {
    fn operation(&self) -> Value {
        match self {
            Step::Set { add, attr, value } => {
                json!({"op": if *add { "add" } else { "Replace" }, "path": attr, "value": value})
            }
            Step::SetPathless { add, values } => json!({"op": if *add { "ADD" } else { "replace" }, "value": values}),
            Step::Remove { attr } => json!({"op": "remove", "path": attr}),
            Step::AddEmails(list) => json!({"op": "add", "path": "emails", "value": email_json(list)}),
            Step::ReplaceEmails(list) => json!({"op": "replace", "path": "emails", "value": email_json(list)}),
            Step::RemoveEmail(v) => json!({"op": "remove", "path": format!("emails[value eq \"{v}\"]")}),
            Step::RemoveEmailsOfType(t) => json!({"op": "remove", "path": format!("emails[type eq \"{t}\"]")}),
        }
    }

    /// The naive semantics: what RFC 7644 §3.5.2 says, written the obvious way.
    fn apply(&self, m: &mut Model) {
        match self {
            Step::Set { attr, value, .. } => {
                m.simple.insert((*attr).to_owned(), value.clone());
            }
            Step::SetPathless { values, .. } => {
                for (k, v) in values {
                    m.simple.insert((*k).to_owned(), v.clone());
                }
            }
            Step::Remove { attr } => {
                m.simple.remove(*attr);
            }
            Step::AddEmails(list) => {
                for (v, t) in list {
                    let e = ((*v).to_owned(), (*t).to_owned());
                    if !m.emails.contains(&e) {
                        m.emails.push(e);
                    }
                }
            }
            Step::ReplaceEmails(list) => {
                m.emails = list.iter().map(|(v, t)| ((*v).to_owned(), (*t).to_owned())).collect()
            }
            Step::RemoveEmail(v) => m.emails.retain(|(value, _)| value != v),
            Step::RemoveEmailsOfType(t) => m.emails.retain(|(_, ty)| ty != t),
        }
    }
}

fn observe(doc: &UserDocument) -> Model {
    let map = doc.as_map();
    let simple = SIMPLE
        .iter()
        .filter_map(|k| map.get(*k).and_then(Value::as_str).map(|v| ((*k).to_owned(), v.to_owned())))
        .collect();
    let emails = map
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| (e["value"].as_str().unwrap_or("").to_owned(), e["type"].as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default();
    Model { simple, emails }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn patch_agrees_with_the_reference_model(steps in prop::collection::vec(step(), 1..8), one_request in any::<bool>()) {
        let mut doc = UserDocument::from_request(json!({"userName": "jane", "active": true})).unwrap();
        let mut model = Model::default();
        if one_request {
            let ops: Vec<Value> = steps.iter().map(Step::operation).collect();
            let req = PatchRequest::parse(&json!({"Operations": ops})).unwrap();
            doc.patch(&req).map_err(|e| TestCaseError::fail(e.to_string()))?;
            steps.iter().for_each(|s| s.apply(&mut model));
        } else {
            for s in &steps {
                let req = PatchRequest::parse(&json!({"Operations": [s.operation()]})).unwrap();
                doc.patch(&req).map_err(|e| TestCaseError::fail(e.to_string()))?;
                s.apply(&mut model);
                prop_assert_eq!(observe(&doc), model.clone(), "after {:?}", s);
            }
        }
        prop_assert_eq!(observe(&doc), model);
        prop_assert_eq!(doc.as_map().get("userName"), Some(&json!("jane")));
    }
}
