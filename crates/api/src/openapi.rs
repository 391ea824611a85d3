//! The OpenAPI document, served at `/openapi.json` and browsed at `/docs`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{
    admin, analytics, audit, community, events, jobs, journeys, members, notifications, ops, posts,
    search, shares, tenant,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenantry", description = "A multi-tenant platform server: tenants, members, posts, events, journeys, the cross-community feed, shares, search."),
    paths(
        admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::patch_tenant,
        admin::delete_tenant, admin::usage, admin::get_settings, admin::patch_settings,
        tenant::get_tenant,
        members::add_member, members::join, members::list_members, members::change_role,
        members::remove_member,
        posts::create_post, posts::list_posts, posts::get_post, posts::edit_post,
        posts::delete_post, posts::like, posts::unlike, posts::add_comment, posts::list_comments,
        events::create_event, events::list_events, events::get_event, events::edit_event,
        events::cancel_event,
        journeys::create_journey, journeys::list_journeys, journeys::get_journey,
        journeys::edit_journey,
        journeys::add_activity, journeys::list_activities, journeys::edit_activity,
        search::search,
        community::my_communities, community::feed, shares::share,
        jobs::overview, jobs::retry, jobs::discard,
        analytics::ingest, analytics::daily,
        notifications::announce, notifications::list, notifications::mark_read,
        notifications::get_preferences, notifications::put_preferences,
        notifications::patch_preferences,
        audit::list,
        ops::healthz, ops::readyz, ops::metrics,
    ),
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
