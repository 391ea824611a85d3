-- A big tenant's own cell (API.md, "Cells": POST /v1/admin/tenants/{id}/dedicate).
--
-- A dedicated tenant is moved to a cell that holds no other tenant, and that
-- cell then takes no new ones: placement of new tenants leaves out every
-- cell holding a dedicated tenant (while another cell is left). Measured in
-- BENCHMARKS.md ("Cells"): a database of its own gives the big tenant what
-- its own partitions would (small indexes, short vacuums, the rest
-- untouched), with no online conversion of the partitioned tables.
ALTER TABLE tenants ADD COLUMN dedicated boolean NOT NULL DEFAULT false;
