//! The bulk import: one change per line (JSON Lines), applied in one transaction. Each line
//! is an admin call written out: `op` names the call, and the other fields are the call's
//! path parameters, under the names the path gives them, and its JSON body. The table below
//! is the one description of that correspondence: the OpenAPI schema of an import line is
//! generated from it, and a test holds every op to it.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{AdminError, AdminState, ErrorBody, actor};
use crate::directory::DirectoryChange;
use crate::policy::ApplyError;
use crate::storage::ScramCredential;

pub(super) fn routes() -> Router<AdminState> {
    Router::new().route("/import", post(import))
}

/// What an import did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Imported {
    /// How many changes were applied (all of them: an import is all or nothing).
    applied: usize,
}

#[utoipa::path(post, path = "/import", tag = "import",
    summary = "Apply a batch of changes in one transaction",
    description = "One change per line (JSON Lines, `ImportLine`): all of them are applied, or none, and an error names the line that failed.",
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One `ImportLine` per line"),
    responses(
        (status = 200, description = "Every change applied", body = Imported),
        (status = 400, description = "Nothing imported; `error` names the line at fault", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
    ))]
pub(super) async fn import(
    State(admin): State<AdminState>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Imported>, AdminError> {
    let batch = parse_import(&body)
        .map_err(|e| AdminError::BadRequest(format!("nothing imported: {e}")))?;
    let who = format!("{}:import", actor(&headers));
    let nothing = |message: String| AdminError::BadRequest(format!("nothing imported: {message}"));
    let credentials = credentials(batch.passwords, admin.scram_iterations())
        .await
        .map_err(nothing)?;
    match admin.apply(&who, &batch.changes, &credentials).await {
        Ok(()) => Ok(Json(Imported {
            applied: batch.changes.len(),
        })),
        Err(ApplyError::Invalid { index, invalid }) => {
            let line = batch.lines.get(index).copied().unwrap_or(index + 1);
            Err(nothing(format!("line {line}: {invalid}")))
        }
        Err(ApplyError::Storage(e)) => Err(AdminError::Internal(format!("nothing imported: {e}"))),
    }
}

/// One admin call as an import line.
#[derive(Debug, Clone, Copy)]
pub struct ImportOp {
    pub op: &'static str,
    pub method: &'static str,
    /// Under `/admin/api/v1`; each `{name}` is a field of the line.
    pub path: &'static str,
    /// Fields of the call's JSON body, the required ones first.
    pub body: &'static [&'static str],
    pub required_body: usize,
}

const fn op(
    op: &'static str,
    method: &'static str,
    path: &'static str,
    body: &'static [&'static str],
    required_body: usize,
) -> ImportOp {
    ImportOp {
        op,
        method,
        path,
        body,
        required_body,
    }
}

pub const IMPORT_OPS: &[ImportOp] = &[
    op("put_structure", "PUT", "/structures/{id}", &["name"], 1),
    op("delete_structure", "DELETE", "/structures/{id}", &[], 0),
    op(
        "put_user",
        "PUT",
        "/users/{username}",
        &["display_name", "profile", "structures", "password"],
        3,
    ),
    op("delete_user", "DELETE", "/users/{username}", &[], 0),
    op(
        "put_class",
        "PUT",
        "/classes/{id}",
        &["structure", "name", "members"],
        2,
    ),
    op("delete_class", "DELETE", "/classes/{id}", &[], 0),
    op("put_group", "PUT", "/groups/{id}", &["name", "members"], 1),
    op("delete_group", "DELETE", "/groups/{id}", &[], 0),
    op(
        "add_class_member",
        "PUT",
        "/classes/{id}/members/{username}",
        &[],
        0,
    ),
    op(
        "remove_class_member",
        "DELETE",
        "/classes/{id}/members/{username}",
        &[],
        0,
    ),
    op(
        "add_group_member",
        "PUT",
        "/groups/{id}/members/{username}",
        &[],
        0,
    ),
    op(
        "remove_group_member",
        "DELETE",
        "/groups/{id}/members/{username}",
        &[],
        0,
    ),
    op(
        "link_parent",
        "PUT",
        "/users/{username}/children/{child}",
        &[],
        0,
    ),
    op(
        "unlink_parent",
        "DELETE",
        "/users/{username}/children/{child}",
        &[],
        0,
    ),
    op(
        "set_profile_access",
        "PUT",
        "/structures/{id}/profiles/{profile}",
        &["enabled"],
        1,
    ),
    op(
        "set_rule",
        "PUT",
        "/structures/{id}/rules/{from}/{to}",
        &["scope"],
        1,
    ),
];

impl ImportOp {
    /// The path parameters' names, in order.
    pub fn path_fields(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
    }

    /// Every field of a line, `op` aside.
    pub fn fields(&self) -> impl Iterator<Item = &'static str> {
        self.path_fields().chain(self.body.iter().copied())
    }
}

pub fn import_op(name: &str) -> Option<&'static ImportOp> {
    IMPORT_OPS.iter().find(|o| o.op == name)
}

/// A parsed batch.
#[derive(Debug, Default)]
pub struct Import {
    pub changes: Vec<DirectoryChange>,
    /// The line (from 1) of each change.
    pub lines: Vec<usize>,
    /// Passwords given with `put_user`: line, username, password.
    pub passwords: Vec<(usize, String, String)>,
}

/// Parses a JSON Lines batch; a bad line names its number (from 1).
pub fn parse_import(text: &str) -> Result<Import, String> {
    let mut import = Import::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |e: &dyn std::fmt::Display| format!("line {number}: {e}");
        let mut fields: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| json_error(number, &e))?;
        let name = fields
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| at(&"each line needs an \"op\""))?
            .to_owned();
        let Some(op) = import_op(&name) else {
            let known: Vec<&str> = IMPORT_OPS.iter().map(|o| o.op).collect();
            return Err(at(&format!(
                "unknown op {name:?}: one of {}",
                known.join(", ")
            )));
        };
        // Unknown fields are refused by the change's own parsing, which names those it takes
        // (and still reads the former names of a few, for files written before).
        if op.body.contains(&"password")
            && let Some(password) = fields.remove("password")
        {
            let Value::String(password) = password else {
                return Err(at(&"\"password\" must be a string"));
            };
            let username = fields
                .get("username")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            import.passwords.push((number, username, password));
        }
        let change: DirectoryChange =
            serde_json::from_value(Value::Object(fields)).map_err(|e| json_error(number, &e))?;
        import.changes.push(change);
        import.lines.push(number);
    }
    Ok(import)
}

/// A JSON error of line `number`, with the one line number that means something to the
/// person who wrote the file (serde_json counts lines within the line it was given).
fn json_error(number: usize, err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&position) {
        Some(message) if err.line() > 0 => {
            format!("line {number}, column {}: {message}", err.column())
        }
        _ => format!("line {number}: {text}"),
    }
}

/// The stored credentials of the batch's passwords; a password that cannot be set names its
/// line, and nothing is imported.
pub async fn credentials(
    passwords: Vec<(usize, String, String)>,
    iterations: u32,
) -> Result<Vec<(String, Vec<ScramCredential>)>, String> {
    let mut derived = Vec::with_capacity(passwords.len());
    for (line, username, password) in passwords {
        let name = crate::auth::normalise_username(&username)
            .ok_or_else(|| format!("line {line}: {username:?} is not a valid username"))?;
        let credentials = crate::accounts::credentials(password, iterations)
            .await
            .map_err(|e| format!("line {line}: {e}"))?;
        derived.push((name, credentials));
    }
    Ok(derived)
}

/// The OpenAPI schema of an import line, generated from `IMPORT_OPS`.
pub fn line_schema() -> Value {
    let ops: Vec<Value> = IMPORT_OPS
        .iter()
        .map(|op| {
            let mut required: Vec<&str> = vec!["op"];
            required.extend(op.path_fields());
            required.extend(op.body.iter().take(op.required_body));
            let mut properties = Map::new();
            properties.insert("op".into(), json!({ "type": "string", "enum": [op.op] }));
            for field in op.fields() {
                properties.insert(field.into(), json!({}));
            }
            json!({
                "type": "object",
                "title": op.op,
                "description": format!("{} /admin/api/v1{}", op.method, op.path),
                "required": required,
                "properties": properties,
                "additionalProperties": false,
            })
        })
        .collect();
    json!({
        "description": "One line of a bulk import: an admin call written out. `op` names the call (its method and path are in each variant's description); the other fields are the call's path parameters, under their names in the path, and the fields of its JSON body. Generated from the server's import table.",
        "oneOf": ops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file served at /admin/api/v1/openapi.json carries the generated schema. Run the
    /// tests with CAUSETTE_BLESS_OPENAPI=1 to rewrite it after changing the table.
    #[test]
    fn the_openapi_document_has_the_generated_import_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-api.openapi.json");
        let mut document: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let generated = line_schema();
        if std::env::var_os("CAUSETTE_BLESS_OPENAPI").is_some() {
            document["components"]["schemas"]["ImportLine"] = generated;
            let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
            return;
        }
        assert_eq!(
            document["components"]["schemas"]["ImportLine"], generated,
            "docs/admin-api.openapi.json is out of date: run CAUSETTE_BLESS_OPENAPI=1 cargo test"
        );
    }

    /// Each directory change an admin call makes is an import line with exactly the call's
    /// fields, and back.
    #[test]
    fn every_op_takes_the_fields_of_its_call() {
        let samples = [
            r#"{"op":"put_structure","id":"S","name":"N"}"#,
            r#"{"op":"delete_structure","id":"S"}"#,
            r#"{"op":"put_user","username":"u","display_name":"U","profile":"student","structures":["S"]}"#,
            r#"{"op":"delete_user","username":"u"}"#,
            r#"{"op":"put_class","id":"C","structure":"S","name":"N","members":["u"]}"#,
            r#"{"op":"delete_class","id":"C"}"#,
            r#"{"op":"put_group","id":"G","name":"N","members":["u"]}"#,
            r#"{"op":"delete_group","id":"G"}"#,
            r#"{"op":"add_class_member","id":"C","username":"u"}"#,
            r#"{"op":"remove_class_member","id":"C","username":"u"}"#,
            r#"{"op":"add_group_member","id":"G","username":"u"}"#,
            r#"{"op":"remove_group_member","id":"G","username":"u"}"#,
            r#"{"op":"link_parent","username":"p","child":"c"}"#,
            r#"{"op":"unlink_parent","username":"p","child":"c"}"#,
            r#"{"op":"set_profile_access","id":"S","profile":"student","enabled":false}"#,
            r#"{"op":"set_rule","id":"S","from":"student","to":"teacher","scope":"any"}"#,
        ];
        assert_eq!(samples.len(), IMPORT_OPS.len());
        for (sample, op) in samples.iter().zip(IMPORT_OPS) {
            let import = parse_import(sample).unwrap_or_else(|e| panic!("{sample}: {e}"));
            let written = serde_json::to_value(&import.changes[0]).unwrap();
            let mut keys: Vec<&str> = written
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .filter(|k| *k != "op")
                .collect();
            keys.sort();
            let mut expected: Vec<&str> = op.fields().filter(|f| *f != "password").collect();
            expected.sort();
            assert_eq!(keys, expected, "{}", op.op);
            assert_eq!(written["op"], op.op);
        }
    }

    #[test]
    fn passwords_are_taken_apart_and_unknown_fields_named() {
        let import = parse_import(
            "\n{\"op\":\"put_user\",\"username\":\"u\",\"display_name\":\"U\",\"profile\":\"student\",\"structures\":[],\"password\":\"pw\"}",
        )
        .unwrap();
        assert_eq!(import.passwords, vec![(2, "u".into(), "pw".into())]);
        assert_eq!(import.lines, vec![2]);
        let error =
            parse_import(r#"{"op":"add_class_member","klass":"C","username":"u"}"#).unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("klass") && error.contains("`id`"),
            "{error}"
        );
        let error =
            parse_import(r#"{"op":"delete_user","username":"u","password":"pw"}"#).unwrap_err();
        assert!(error.contains("password"), "{error}");
        // The former field names are still read.
        let import =
            parse_import(r#"{"op":"add_class_member","class":"C","username":"u"}"#).unwrap();
        assert_eq!(
            import.changes[0],
            DirectoryChange::AddClassMember {
                class: "C".into(),
                username: "u".into()
            }
        );
        let error =
            parse_import(r#"{"op":"set_hidden","username":"u","hidden":true}"#).unwrap_err();
        assert!(error.contains("unknown op"), "{error}");
    }
}
