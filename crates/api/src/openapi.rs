//! The OpenAPI document, served at `/openapi.json` and browsed at `/docs`:
//! what is said once for the whole API (info, tags, security schemes); the
//! operations come from the routes as they register ([`crate::routes::all`]).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenantry", description = "A multi-tenant platform server: tenants, members, posts, events, journeys, the cross-community feed, shares, search."),
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
        (name = "ops", description = "Health and metrics"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
