//! A fresh database per test in the PostgreSQL the tests use.

pub use tenantry_db::testing::FreshDatabase;
