//! The OpenAPI document, served at `/openapi.json` and browsed at `/docs`:
//! what is said once for the whole API (info, tags, security schemes); the
//! operations come from the routes as they register ([`crate::routes::all`]);
//! then [`contract`] adds, per class of operation, what the request pipeline
//! answers for every operation of that class, so that each route's annotation
//! only lists what is its own.

use serde_json::{Map, Value, json};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The security scheme of a user's JWT (`Authorization: Bearer <JWT>`).
pub const USER_JWT: &str = "user_jwt";
/// The security scheme of the platform admin token.
pub const ADMIN_TOKEN: &str = "admin_token";
/// The security scheme naming a request's tenant by slug (`X-Tenant`). A
/// tenant is not a credential, but as a scheme Swagger UI's "Authorize" asks
/// for it once and "Try it out" sends it with every tenant-scoped operation.
pub const TENANT: &str = "tenant";

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenantry", description = "A multi-tenant platform server: tenants, members, posts, events, journeys, the cross-community feed, shares, search.\n\nErrors are `application/problem+json` (schema `Problem`). Tenant-scoped operations need the user's JWT and the tenant, named by `X-Tenant: <slug>` (or by its custom domain, a `<slug>.<base domain>` host, or `?tenant=<slug>`); user-scoped operations need the JWT only; `/v1/admin/...` the platform admin token."),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    modifiers(&Security),
    tags(
        (name = "admin", description = "Platform admin: the tenant registry (admin token)"),
        (name = "tenant", description = "The resolved tenant"),
        (name = "members", description = "Members and roles"),
        (name = "posts", description = "Posts, likes, comments"),
        (name = "events", description = "Events: upcoming lists, edits, cancellation"),
        (name = "journeys", description = "Journeys and their (monthly-partitioned) activities"),
        (name = "search", description = "Full-text search over a tenant's posts and events"),
        (name = "me", description = "User-scoped: the caller's communities, the cross-community feed, shares"),
        (name = "analytics", description = "Group-committed analytics events and daily statistics"),
        (name = "notifications", description = "Announcements and members' notifications"),
        (name = "audit", description = "The tenant's audit log"),
        (name = "support", description = "Support access: agents, the grants a tenant gives them, what they did"),
        (name = "ops", description = "Health, metrics and the front page"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            USER_JWT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A user's JWT (HS256): `sub` the user's UUID, `exp` required",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The platform admin token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            TENANT,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Tenant",
                "The tenant's slug. A request may instead name its tenant by the tenant's \
                 custom domain, by a `<slug>.<base domain>` host, or by `?tenant=<slug>`; \
                 two signals that name different tenants answer 400.",
            ))),
        );
    }
}

/// Who may call an operation, read from its declared security: it decides
/// what the request pipeline answers before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// The user's JWT and a tenant (`tenancy::Scope`).
    Tenant,
    /// The user's JWT, no tenant (`user_scope::UserScope`).
    User,
    /// The platform admin token (`auth::PlatformAdmin`).
    Admin,
    /// Nothing.
    Public,
}

impl Class {
    fn of(operation: &Value) -> Self {
        let schemes: Vec<&str> = operation["security"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|requirement| requirement.keys().map(String::as_str))
            .collect();
        if schemes.contains(&ADMIN_TOKEN) {
            Class::Admin
        } else if schemes.contains(&TENANT) {
            Class::Tenant
        } else if schemes.contains(&USER_JWT) {
            Class::User
        } else {
            Class::Public
        }
    }
}

/// Why an operation may answer a status: each reason names the problem
/// codes it comes with (API.md, "Conventions").
fn reasons(class: Class, operation: &Value, has_path_ids: bool) -> Vec<(u16, &'static str)> {
    let mut reasons = vec![(
        400,
        "`Tenantry-Version` names no API version (`bad_request`).",
    )];
    let has_body = operation.get("requestBody").is_some();
    let has_query = operation["parameters"]
        .as_array()
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    match class {
        Class::Tenant => reasons.extend([
            (400, "No tenant named, or two signals (domain, host, `X-Tenant`, `?tenant=`) name different tenants (`bad_request`)."),
            (401, "Missing, malformed, expired or invalid bearer token (`unauthenticated`)."),
            (403, "The tenant is suspended (`tenant_suspended`); the caller is not a member or lacks the role, or their `X-Support-Grant` is not live, or is read-only and this is a write (`forbidden`); the tenant has this feature off (`feature_disabled`); a quota is used up (`quota_exceeded`)."),
            (404, "No such tenant, or it was deleted (`not_found`)."),
            (429, "The tenant or the user within it is over its request rate (`rate_limited`)."),
        ]),
        Class::User => reasons.extend([
            (401, "Missing, malformed, expired or invalid bearer token (`unauthenticated`)."),
            (429, "The user is over the request rate (`rate_limited`)."),
        ]),
        Class::Admin => reasons.push((401, "Missing or wrong admin token (`unauthenticated`).")),
        Class::Public => {}
    }
    if has_body {
        reasons.extend([
            (400, "The body is not well-formed JSON (`bad_request`)."),
            (408, "The body did not arrive within 30 s (`request_timeout`)."),
            (413, "The body is larger than 1 MiB (`payload_too_large`)."),
            (415, "The body is not `Content-Type: application/json` (`unsupported_media_type`)."),
            (422, "The body is not of the documented shape, or a field is invalid (`validation_failed`, with `errors`)."),
        ]);
    }
    if has_query {
        reasons.push((
            400,
            "A query parameter is malformed or out of range (`bad_request`).",
        ));
    }
    if has_path_ids {
        reasons.push((
            404,
            "No such object: the id is unknown, malformed, or another tenant's (`not_found`).",
        ));
    }
    reasons.push((
        503,
        "The server is shedding load or the caller's database share stayed busy (`overloaded`), a query ran past the statement timeout (`query_timeout`), or the database is unreachable (`database_unavailable`); see `Retry-After`.",
    ));
    reasons
}

/// What a status means when an operation's annotation names it without
/// saying why: the problem codes API.md lists for it.
fn problem_code(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "The request is malformed (`bad_request`).",
        401 => "Authentication required (`unauthenticated`).",
        403 => {
            "The caller may not do this (`forbidden`), or a quota is used up (`quota_exceeded`)."
        }
        404 => "No such object (`not_found`).",
        409 => "Conflicts with existing data (`conflict`).",
        422 => "A field is invalid (`validation_failed`, with `errors`).",
        429 => "Over the request rate (`rate_limited`).",
        503 => "Try again later (`overloaded`, `query_timeout`, `database_unavailable`).",
        _ => return None,
    })
}

/// The finished document: the operations as the routes registered them,
/// with what every operation of their class answers ([`Class`]):
///
/// - tenant-scoped operations (declaring the `tenant` scheme) answer 400,
///   401, 403, 404, 429 from tenant resolution, authentication, membership
///   and the rate limit; user-scoped ones 401 and 429; admin ones 401;
/// - an operation with a body answers 400, 408, 413, 415, 422; with query
///   parameters 400; with ids in its path 404 (every id is a UUID);
/// - every operation may answer 503 (load shedding, the database share, the
///   statement timeout, the database away);
/// - every error is `application/problem+json` (`Problem`), 401 with
///   `WWW-Authenticate`, 429 and 503 with `Retry-After`; every response
///   carries `X-Request-Id`.
///
/// `tiers` are the names of the tier table in force, which a request's
/// `tier` must be one of; `cells` the cells configured (`main` and
/// `TENANTRY_CELLS`), which a request's `cell` must be one of.
pub fn contract(openapi: utoipa::openapi::OpenApi, tiers: &[String], cells: &[String]) -> Value {
    let mut doc = serde_json::to_value(openapi).expect("an OpenAPI document serializes");
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if matches!(
                    method.as_str(),
                    "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
                ) {
                    complete(path, operation);
                }
            }
        }
    }
    name_values(&mut doc, "tier", tiers);
    name_values(&mut doc, "cell", cells);
    doc
}

fn complete(path: &str, operation: &mut Value) {
    let ids = declare_path_ids(path, operation);
    let class = Class::of(operation);
    declare_version_headers(operation, class);
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for (status, reason) in reasons(class, operation, !ids.is_empty()) {
        by_status.entry(status).or_default().push(reason);
    }
    let responses = operation["responses"]
        .as_object_mut()
        .expect("every operation has responses");
    for (status, reasons) in by_status {
        let response = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": ""}));
        if response["description"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            response["description"] = Value::String(reasons.join(" "));
        }
    }
    for (status, response) in responses.iter_mut() {
        if response["description"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
            && let Some(why) = status.parse().ok().and_then(problem_code)
        {
            response["description"] = Value::String(why.to_owned());
        }
    }
    for (status, response) in responses.iter_mut() {
        let status: u16 = status.parse().unwrap_or(0);
        let headers = response
            .as_object_mut()
            .expect("a response is an object")
            .entry("headers")
            .or_insert_with(|| json!({}));
        headers["Tenantry-Version"] = json!({
            "description": "The API version of the answer; a deprecated one also sends `Deprecation` and `Sunset`.",
            "schema": {"type": "string"},
        });
        headers["X-Request-Id"] = json!({
            "description": "The request's id: the caller's `X-Request-Id` if sane, else a new one.",
            "schema": {"type": "string"},
        });
        match status {
            401 => {
                headers["WWW-Authenticate"] = json!({
                    "description": "`Bearer realm=\"tenantry\"`, with the reason.",
                    "schema": {"type": "string"},
                });
            }
            429 | 503 => {
                headers["Retry-After"] = json!({
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                });
            }
            _ => {}
        }
        if status >= 400 {
            response["content"] = json!({
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            });
        }
    }
}

/// Every operation takes `Tenantry-Version` (API.md, "Platform controls"),
/// declared with the one version this document describes,
/// and a tenant's operation `X-Support-Grant`, the grant a support agent
/// acts under.
fn declare_version_headers(operation: &mut Value, class: Class) {
    // This document describes the newest version; older ones answer in
    // their own shapes (docs/API.md, "API versions"), which it does not.
    let newest = crate::versions::newest();
    let older: Vec<&str> = crate::versions::VERSIONS
        .iter()
        .map(|v| v.date)
        .filter(|d| *d != newest)
        .collect();
    let parameters = operation
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    let Some(parameters) = parameters.as_array_mut() else {
        return;
    };
    parameters.push(json!({
        "name": "Tenantry-Version",
        "in": "header",
        "required": false,
        "description": format!(
            "The API version to answer in; default the tenant's pinned version (the newest without a tenant). This document describes {newest}; the older versions ({}) are in docs/API.md.",
            older.join(", ")
        ),
        "schema": {"type": "string", "enum": [newest]},
    }));
    if matches!(class, Class::Tenant) {
        parameters.push(json!({
            "name": "X-Support-Grant",
            "in": "header",
            "required": false,
            "description": "A support agent's grant in this tenant (its id): the agent acts under it while it is live.",
            "schema": {"type": "string", "format": "uuid"},
        }));
    }
}

/// Declares each `{name}` of `path` that the operation does not: every id
/// in a path is a UUID, and one that is not answers 404. Returns the names.
fn declare_path_ids(path: &str, operation: &mut Value) -> Vec<String> {
    let names: Vec<String> = path
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return names;
    }
    let parameters = operation
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]));
    let Some(parameters) = parameters.as_array_mut() else {
        return names;
    };
    for name in &names {
        let declared = parameters
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == name.as_str());
        if !declared {
            parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "schema": {"type": "string", "format": "uuid"},
            }));
        }
    }
    names
}

/// Every `tier` property of a request body's schema names a tier of the
/// table in force.
/// Gives the property `field` of every request body the names this server
/// knows as an `enum` (they are configuration, not code).
fn name_values(doc: &mut Value, field: &str, values: &[String]) {
    let mut bodies: Vec<String> = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for operation in paths
            .values()
            .filter_map(Value::as_object)
            .flat_map(Map::values)
        {
            let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
            if let Some(name) = schema["$ref"]
                .as_str()
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                bodies.push(name.to_owned());
            }
        }
    }
    for name in bodies {
        let pointer = format!("/components/schemas/{name}/properties/{field}");
        let Some(property) = doc.pointer_mut(&pointer) else {
            continue;
        };
        let mut names: Vec<Value> = values.iter().map(|t| json!(t)).collect();
        // `null` leaves the value as it is (or to the server).
        if property["type"]
            .as_array()
            .is_some_and(|ts| ts.contains(&json!("null")))
        {
            names.push(Value::Null);
        }
        property["enum"] = Value::Array(names);
    }
}

/// What [`crate::routes::text`] accepts, as a JSON Schema pattern: no NUL
/// anywhere, and at least one character that is not white space (Rust's
/// `char::is_whitespace`, which `str::trim` strips), spelled out because
/// `\s` means slightly different sets in ECMAScript, Python and Rust.
pub const TEXT_PATTERN: &str = "^[^\\u0000]*[^\\u0000\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$";

/// The schema of a text field checked by [`crate::routes::text`] with at most
/// `MAX` characters: `#[schema(schema_with = text::<{ MAX }>)]`.
pub fn text<const MAX: usize>() -> utoipa::openapi::Object {
    text_schema(MAX, false)
}

/// [`text`], or null.
pub fn text_or_null<const MAX: usize>() -> utoipa::openapi::Object {
    text_schema(MAX, true)
}

fn text_schema(max: usize, nullable: bool) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let kind = if nullable {
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(kind)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(TEXT_PATTERN))
        .description(Some(format!(
            "Trimmed, not blank, at most {max} characters, no NUL character."
        )))
        .build()
}

/// A string that is one of `values`.
pub fn one_of(values: &[&str]) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// [`one_of`], or null.
pub fn one_of_or_null(values: &[&str]) -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let mut values: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    values.push(Value::Null);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values))
        .build()
}

/// A member's role ([`tenantry_core::Role`]).
pub fn role() -> utoipa::openapi::Object {
    one_of(&["owner", "admin", "moderator", "member"])
}

/// A tenant slug as [`tenantry_core::TenantSlug::parse`] accepts it: 3 to 63
/// lowercase letters, digits and single hyphens, starting with a letter and
/// not ending with a hyphen (and not a reserved word such as `admin`).
pub fn slug() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(3))
        .max_length(Some(63))
        .pattern(Some("^[a-z](-?[a-z0-9])*$"))
        .build()
}

/// A custom domain as [`tenantry_core::Domain::parse`] accepts it (at least
/// two labels of letters, digits and inner hyphens), or null.
pub fn domain_or_null() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .max_length(Some(253))
        .pattern(Some(
            "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
        ))
        .build()
}

/// A string with no NUL character.
fn no_nul_string() -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[^\\u0000]*$"))
}

/// A JSON object the server keeps as PostgreSQL `jsonb`: any JSON, except
/// that no string or key may hold a NUL character, which `jsonb` cannot
/// store (422). For `#[schema(value_type = JsonObject)]`.
pub struct JsonObject;

impl utoipa::PartialSchema for JsonObject {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(no_nul_string()))
            .additional_properties(Some(Ref::from_schema_name("JsonValue")))
            .into()
    }
}

impl utoipa::ToSchema for JsonObject {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "JsonValue".to_owned(),
            <JsonValue as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// Any JSON value of a [`JsonObject`].
pub struct JsonValue;

impl utoipa::PartialSchema for JsonValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{
            ArrayBuilder, ObjectBuilder, OneOfBuilder, Ref, SchemaType, Type,
        };
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(SchemaType::from_iter([
                Type::Null,
                Type::Boolean,
                Type::Number,
            ])))
            .item(no_nul_string())
            .item(ArrayBuilder::new().items(Ref::from_schema_name("JsonValue")))
            .item(Ref::from_schema_name("JsonObject"))
            .into()
    }
}

impl utoipa::ToSchema for JsonValue {}
