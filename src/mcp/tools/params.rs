//! A tool's parameters: a struct deriving `Deserialize` (with
//! `deny_unknown_fields`) and `JsonSchema`, whose doc comments describe each
//! parameter. [`input_schema`] turns it into the tool's `inputSchema`, and
//! [`parse`] checks a call's arguments against that same schema before serde
//! sees them, so the names a client is shown, the names the server knows and
//! each parameter's type cannot drift apart, and every mistake gets a
//! message of its own instead of serde's.
//!
//! A `null` counts as an absent parameter, as it always has: optional
//! parameters are `Option`s, and the schema names the type a caller sends.

use std::sync::Arc;

use rmcp::model::JsonObject;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call's arguments were refused (the first mistake found: an unknown
/// name, then a wrong type in the schema's order, then a missing parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mistake {
    #[error("unknown parameter `{name}`; known: {known}")]
    Unknown { name: String, known: String },
    #[error("parameter `{name}` must be {expected}, got {got}")]
    WrongType {
        name: String,
        expected: &'static str,
        got: &'static str,
    },
    #[error("missing required parameter `{name}`")]
    Missing { name: String },
    /// What serde says when the schema's checks passed and it still
    /// refused (a constraint the schema's plain types do not show).
    #[error("{0}")]
    Invalid(String),
}

/// The `inputSchema` of parameters `P`: the root without the type's doc
/// (noise to a model), each parameter's `["T", "null"]` as `"T"`, and its
/// description after its type (the order the hand-written schemas had, so
/// that a host comparing a tool's definition byte for byte sees no change).
pub fn input_schema<P: JsonSchema>() -> Arc<JsonObject> {
    let mut settings = SchemaSettings::draft2020_12();
    settings.meta_schema = None;
    // The type's own schema, not a root one: parameters are flat (no
    // `$defs`), and the root's machinery is generic code per type.
    tidy(P::json_schema(&mut settings.into_generator()))
}

/// The tidying of [`input_schema`], apart from the generic part (the
/// sidecar's image has a size budget).
fn tidy(schema: Schema) -> Arc<JsonObject> {
    let Value::Object(mut root) = schema.to_value() else {
        return Arc::new(JsonObject::new());
    };
    // `shift_remove`: a plain `remove` would move the last key into the gap.
    root.shift_remove("title");
    root.shift_remove("description");
    if let Some(Value::Object(properties)) = root.get_mut("properties") {
        for property in properties.values_mut() {
            if let Value::Object(property) = property {
                tidy_property(property);
            }
        }
    }
    // Last, as the hand-written schemas had it (`insert` keeps a key where
    // it is, so it is taken out first).
    if let Some(additional) = root.shift_remove("additionalProperties") {
        root.insert("additionalProperties".into(), additional);
    }
    Arc::new(root)
}

fn tidy_property(property: &mut JsonObject) {
    if let Some(Value::Array(types)) = property.get("type") {
        let not_null: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        if let [only] = not_null[..] {
            let only = only.clone();
            property.insert("type".into(), only);
        }
    }
    // After the type and what goes with it, as the hand-written schemas had it.
    if let Some(description) = property.shift_remove("description") {
        property.insert("description".into(), description);
    }
}

/// Checks `arguments` against `schema` (the tool's `inputSchema`, from
/// [`input_schema`]) and deserialises them into `P`.
pub fn parse<P: DeserializeOwned>(
    schema: &JsonObject,
    arguments: Option<JsonObject>,
) -> Result<P, Mistake> {
    let mut arguments = arguments.unwrap_or_default();
    check(schema, &mut arguments)?;
    serde_json::from_value(Value::Object(arguments)).map_err(|e| Mistake::Invalid(e.to_string()))
}

/// The checks of [`parse`], apart from the generic part; the `null`s are
/// taken out of `arguments` once they passed.
fn check(schema: &JsonObject, arguments: &mut JsonObject) -> Result<(), Mistake> {
    let empty = JsonObject::new();
    let properties = match schema.get("properties") {
        Some(Value::Object(properties)) => properties,
        _ => &empty,
    };
    if let Some(name) = arguments.keys().find(|k| !properties.contains_key(*k)) {
        return Err(Mistake::Unknown {
            name: name.clone(),
            known: properties
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for (name, property) in properties {
        let Some(value) = arguments.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        let Some(expected) = property.get("type").and_then(Value::as_str) else {
            continue;
        };
        if let Some(expected) = wrong_type(expected, value) {
            return Err(Mistake::WrongType {
                name: name.clone(),
                expected,
                got: kind(value),
            });
        }
    }
    let required = schema.get("required").and_then(Value::as_array);
    for name in required.into_iter().flatten().filter_map(Value::as_str) {
        if arguments.get(name).is_none_or(Value::is_null) {
            return Err(Mistake::Missing {
                name: name.to_owned(),
            });
        }
    }
    arguments.retain(|_, value| !value.is_null());
    Ok(())
}

/// `Some(what the schema asks for)` when `value` is not of JSON Schema type
/// `expected`; `None` when it is, or the type is not a plain one.
fn wrong_type(expected: &str, value: &Value) -> Option<&'static str> {
    let (fits, wording) = match expected {
        "string" => (value.is_string(), "a string"),
        "boolean" => (value.is_boolean(), "a boolean"),
        "integer" => (value.is_i64() || value.is_u64(), "an integer"),
        "number" => (value.is_number(), "a number"),
        "array" => (value.is_array(), "an array"),
        "object" => (value.is_object(), "an object"),
        _ => return None,
    };
    (!fits).then_some(wording)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    /// Not shown to clients.
    #[derive(Debug, PartialEq, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Example {
        /// What to do.
        what: String,
        /// How many.
        how_many: Option<u32>,
        /// Whether to.
        #[serde(default)]
        loud: bool,
    }

    fn schema() -> Arc<JsonObject> {
        input_schema::<Example>()
    }

    fn parse_example(arguments: &Value) -> Result<Example, Mistake> {
        parse(&schema(), arguments.as_object().cloned())
    }

    #[test]
    fn the_schema_is_plain_and_in_the_hand_written_order() {
        assert_eq!(
            serde_json::to_string(&*schema()).unwrap(),
            json!({
                "type": "object",
                "properties": {
                    "what": {"type": "string", "description": "What to do."},
                    "how-many": {"type": "integer", "format": "uint32", "minimum": 0, "description": "How many."},
                    "loud": {"type": "boolean", "default": false, "description": "Whether to."}
                },
                "required": ["what"],
                "additionalProperties": false
            })
            .to_string()
        );
    }

    #[test]
    fn each_mistake_is_named_and_nulls_are_absent() {
        assert_eq!(
            parse_example(&json!({"what": "x", "how-many": null, "loud": null})),
            Ok(Example {
                what: "x".into(),
                how_many: None,
                loud: false
            })
        );
        assert_eq!(
            parse_example(&json!({"what": "x", "louder": true})),
            Err(Mistake::Unknown {
                name: "louder".into(),
                known: "what, how-many, loud".into()
            })
        );
        assert_eq!(
            parse_example(&json!({"how-many": 1.5})),
            Err(Mistake::WrongType {
                name: "how-many".into(),
                expected: "an integer",
                got: "a number"
            })
        );
        assert_eq!(
            parse_example(&json!({"loud": true})),
            Err(Mistake::Missing {
                name: "what".into()
            })
        );
        assert_eq!(
            parse_example(&json!({"what": null})),
            Err(Mistake::Missing {
                name: "what".into()
            })
        );
        // A constraint the type check does not see is serde's to refuse.
        assert!(matches!(
            parse_example(&json!({"what": "x", "how-many": -1})),
            Err(Mistake::Invalid(_))
        ));
        assert_eq!(
            Mistake::WrongType {
                name: "loud".into(),
                expected: "a boolean",
                got: "a string"
            }
            .to_string(),
            "parameter `loud` must be a boolean, got a string"
        );
    }
}
