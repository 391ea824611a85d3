//! Integration tests of the measuring tools: the report renders from a
//! recorded run, the seeder writes a consistent database, and a short
//! self-hosted bench runs clean.

mod end_to_end;
mod helpers;
mod report;
