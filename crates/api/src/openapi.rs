//! The OpenAPI document, served at `/openapi.json` and browsed at `/docs`.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::routes::{admin, members, ops, posts, tenant};

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenantry", description = "A multi-tenant platform server: tenants, members, posts."),
    paths(
        admin::create_tenant, admin::list_tenants, admin::get_tenant, admin::patch_tenant,
        admin::delete_tenant, admin::usage, admin::get_settings, admin::patch_settings,
        tenant::get_tenant,
        members::add_member, members::join, members::list_members, members::change_role,
        members::remove_member,
        posts::create_post, posts::list_posts, posts::get_post, posts::edit_post,
        posts::delete_post, posts::like, posts::unlike, posts::add_comment, posts::list_comments,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(crate::problem::Problem, crate::problem::FieldError)),
    modifiers(&Security),
    tags(
        (name = "admin", description = "Platform admin: the tenant registry (admin token)"),
        (name = "tenant", description = "The resolved tenant"),
        (name = "members", description = "Members and roles"),
        (name = "posts", description = "Posts, likes, comments"),
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
