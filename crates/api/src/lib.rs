//! Tenantry's HTTP server.
//!
//! [`server::Application`] starts everything from [`config::Settings`];
//! [`server::run`] serves an already-bound listener until a shutdown future
//! completes, so tests start a whole server on port 0 in one line.

pub mod batch;
pub mod cells;
pub mod config;
pub mod json_body;
pub mod json_time;
pub mod lifecycle;
pub mod maintenance;
pub mod moves;
pub mod observe;
pub mod openapi;
pub mod ops;
pub mod pagination;
pub mod problem;
pub mod purge;
pub mod request;
pub mod routes;
pub mod scaling;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod versions;
pub mod views;
pub mod warm;

pub use config::Settings;
pub use server::{Application, run};
pub use state::AppState;
