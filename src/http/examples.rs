//! Examples in the OpenAPI document, from `openapi/examples.json`.
//!
//! Without them Swagger UI fills a request body from the schema's types (`"region":
//! "string"`), which the API refuses, and shows answers as bare types. The examples live in
//! one JSON file, beside the document they go into, so they read as what a client sends and
//! gets: `examples` are named values (written once under `components/examples` and referred
//! to from every answer that shows them), `requests` the body each operation is shown with,
//! and `responses` which example each operation's answers show, by status; `["Run"]` shows a
//! page holding that example. Every request example is sent to the service by a test and
//! every example is checked against its schema in CI, so they cannot drift from the API.

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::{OpenApi, Ref, RefOr};

const EXAMPLES: &str = include_str!("../../openapi/examples.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Examples {
    examples: BTreeMap<String, Named>,
    requests: BTreeMap<String, Value>,
    responses: BTreeMap<String, BTreeMap<String, Shown>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    summary: String,
    value: Value,
}

/// An answer's example: a named one, or a page of one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Shown {
    One(String),
    Page([String; 1]),
}

/// The request example of each operation that has one, by operation id (for tests).
pub fn request_examples() -> BTreeMap<String, Value> {
    parsed().requests
}

fn parsed() -> Examples {
    serde_json::from_str(EXAMPLES).expect("openapi/examples.json is valid (checked by the tests)")
}

/// Puts the examples into `doc`. An example for an operation, status or name the document
/// lacks is a mistake in the file and panics, so a test catches it at once.
pub fn add(doc: &mut OpenApi) {
    let examples = parsed();
    // The examples answers refer to, as they go under `components/examples`.
    let mut named: BTreeMap<String, Value> = BTreeMap::new();
    let mut unused: BTreeMap<&String, ()> = examples.examples.keys().map(|k| (k, ())).collect();
    let mut ref_to = |shown: &Shown| -> RefOr<utoipa::openapi::example::Example> {
        let (name, item) = match shown {
            Shown::One(name) => (name.clone(), name),
            Shown::Page([item]) => (format!("{item}Page"), item),
        };
        let e = examples.examples.get(item).unwrap_or_else(|| panic!("no example named {item}"));
        unused.remove(item);
        let example = match shown {
            Shown::One(_) => ExampleBuilder::new().summary(e.summary.clone()).value(Some(e.value.clone())),
            Shown::Page(_) => ExampleBuilder::new()
                .summary(format!("A page of: {}", e.summary))
                .value(Some(json!({ "items": [e.value], "next_cursor": null }))),
        };
        named.insert(name.clone(), serde_json::to_value(example.build()).expect("an example serializes"));
        RefOr::Ref(Ref::new(format!("#/components/examples/{name}")))
    };

    let mut left: BTreeMap<&String, ()> =
        examples.requests.keys().chain(examples.responses.keys()).map(|k| (k, ())).collect();
    for item in doc.paths.paths.values_mut() {
        for op in
            [&mut item.get, &mut item.post, &mut item.patch, &mut item.delete, &mut item.put].into_iter().flatten()
        {
            let Some(id) = op.operation_id.clone() else { continue };
            left.remove(&id);
            if let Some(example) = examples.requests.get(&id) {
                let body = op.request_body.as_mut().unwrap_or_else(|| panic!("{id} takes no body"));
                for content in body.content.values_mut() {
                    content.example = Some(example.clone());
                }
            }
            for (status, shown) in examples.responses.get(&id).into_iter().flatten() {
                let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) else {
                    panic!("{id} has no answer {status}");
                };
                let reference = ref_to(shown);
                for content in response.content.values_mut() {
                    content.examples.insert("example".into(), reference.clone());
                }
            }
        }
    }
    assert!(left.is_empty(), "examples for operations the document lacks: {:?}", left.keys());
    assert!(unused.is_empty(), "examples no answer shows: {:?}", unused.keys());
    // utoipa 5 has no field for `components/examples`; its extensions are serialized
    // flattened into the components object, which puts the map where OpenAPI wants it.
    let components = doc.components.get_or_insert_with(Default::default);
    let extensions = components.extensions.get_or_insert_with(Default::default);
    extensions.insert("examples".into(), serde_json::to_value(named).expect("examples serialize"));
}
