//! The JSON side of the document model: the webhook's pods come as JSON, are changed by the
//! same [`super::pod`] code as YAML manifests, and go back as a JSON patch.
//!
//! Why the YAML [`Node`] model and not typed `k8s-openapi` structs or `serde_json::Value` as
//! the one object model: the CLI must keep every scalar as written (YAML 1.1 `yes`, `0755`,
//! quantities like `1.10`; see [`super::yaml`]) and must copy fields it does not know (custom
//! kinds such as Argo Rollouts, fields of newer Kubernetes versions). Typed structs drop unknown
//! fields and re-type scalars, and k8s-openapi costs minutes of compile time on the CI
//! machines. A `Node` built from JSON is lossless: JSON strings become string scalars, numbers,
//! booleans and null become plain scalars with their JSON text, and [`to_json`] maps them back
//! to the same JSON values, so a pod the mutation does not touch round-trips exactly.

use serde_json::{Map, Value};

use super::yaml::{Node, Scalar, Style};

/// A JSON value as a document node.
pub fn from_json(value: &Value) -> Node {
    match value {
        Value::Null => Node::raw("null"),
        Value::Bool(b) => Node::raw(b.to_string()),
        Value::Number(n) => Node::raw(n.to_string()),
        Value::String(s) => Node::str(s.clone()),
        Value::Array(items) => Node::Seq(items.iter().map(from_json).collect()),
        Value::Object(map) => Node::Map(map.iter().map(|(k, v)| (Node::str(k.clone()), from_json(v))).collect()),
    }
}

/// A document node as JSON. Quoted and block scalars, and the strings podns made, are strings;
/// plain scalars resolve as Kubernetes's YAML 1.1 reader resolves them (null, booleans,
/// integers, floats), anything else is a string. Mapping keys are strings.
pub fn to_json(node: &Node) -> Value {
    match node {
        Node::Scalar(s) => scalar_to_json(s),
        Node::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                map.insert(k.as_str().map(str::to_owned).unwrap_or_else(|| to_json(k).to_string()), to_json(v));
            }
            Value::Object(map)
        }
    }
}

fn scalar_to_json(s: &Scalar) -> Value {
    let plain = matches!(s.style, Style::Plain | Style::Raw) && s.tag.is_none();
    if !plain {
        return Value::String(s.value.clone());
    }
    let v = s.value.as_str();
    if Node::Scalar(s.clone()).is_null() {
        return Value::Null;
    }
    if Node::Scalar(s.clone()).is_true() {
        return Value::Bool(true);
    }
    if matches!(v, "false" | "False" | "FALSE" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF") {
        return Value::Bool(false);
    }
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if v.chars().any(|c| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && let Ok(f) = v.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.value.clone())
}

/// The RFC 6902 JSON patch that turns `before` into `after`: objects are compared key by key,
/// arrays of equal length item by item, and anything else that differs is replaced whole (an
/// array that grew or shrank included: the API server then need not reason about moved
/// indexes, and the patch stays readable in the golden files).
pub fn diff(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    diff_at(before, after, &mut String::new(), &mut ops);
    ops
}

fn diff_at(before: &Value, after: &Value, path: &mut String, ops: &mut Vec<Value>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let len = path.len();
                push_token(path, k);
                match b.get(k) {
                    Some(vb) => diff_at(va, vb, path, ops),
                    None => ops.push(serde_json::json!({"op": "remove", "path": path.clone()})),
                }
                path.truncate(len);
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    let len = path.len();
                    push_token(path, k);
                    ops.push(serde_json::json!({"op": "add", "path": path.clone(), "value": vb}));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                push_token(path, &i.to_string());
                diff_at(va, vb, path, ops);
                path.truncate(len);
            }
        }
        _ if before == after => {}
        _ => ops.push(serde_json::json!({"op": "replace", "path": path.clone(), "value": after})),
    }
}

/// Appends `/token` with `~` and `/` escaped (RFC 6901).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    path.push_str(&token.replace('~', "~0").replace('/', "~1"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_nodes() {
        let v = json!({"a": [1, 2.5, true, false, null, "yes", "0755", "1.10"], "b/c": {"~d": ""}});
        assert_eq!(to_json(&from_json(&v)), v);
    }

    #[test]
    fn plain_yaml_scalars_resolve_as_yaml_1_1() {
        let docs = crate::inject::yaml::parse("a: yes\nb: '1'\nc: 0x\nd: 3\ne: 1.5\nf: ~\ng: off\n").unwrap();
        assert_eq!(to_json(&docs[0]), json!({"a": true, "b": "1", "c": "0x", "d": 3, "e": 1.5, "f": null, "g": false}));
    }

    #[test]
    fn diff_escapes_and_replaces_grown_arrays() {
        let a = json!({"metadata": {"annotations": {"x/y": "1"}}, "l": [1], "k": [1, 2], "gone": 1});
        let b = json!({"metadata": {"annotations": {"x/y": "2", "a~b": "3"}}, "l": [1, 2], "k": [1, 3]});
        let ops = diff(&a, &b);
        assert_eq!(
            ops,
            vec![
                json!({"op": "remove", "path": "/gone"}),
                json!({"op": "replace", "path": "/k/1", "value": 3}),
                json!({"op": "replace", "path": "/l", "value": [1, 2]}),
                json!({"op": "replace", "path": "/metadata/annotations/x~1y", "value": "2"}),
                json!({"op": "add", "path": "/metadata/annotations/a~0b", "value": "3"}),
            ]
        );
    }
}
