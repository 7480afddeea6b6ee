-- Whether a receipt's attempts that went out all ended before the printer was seen to take its first bytes, where a
-- cash sale's drawer pulse is (the printer hung up at once, e.g. before its first byte): the sale's drawer is still to
-- open, and the next receipt of the sale that reaches the printer opens it, a COPY too. Every other job that went out
-- (went_out: cut short after the pulse was taken, stopped by a fault, caught by a crash, printed by a replaced
-- database) counts as having opened it: the drawer opens once a sale, never twice.

-- migrate:up
ALTER TABLE print_jobs ADD COLUMN pulse_lost INTEGER NOT NULL DEFAULT 0;

-- migrate:down
ALTER TABLE print_jobs DROP COLUMN pulse_lost;
