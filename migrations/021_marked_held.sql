-- The devices a run marked tickets printed on once the printer held them, not once they were out (meta
-- 'marked_held:' || device, written with the marks from stop 75 on): after a crash no printer that may be such a one
-- is cleared, whatever the config calls it then. A database from before has none: the printers of its last run that
-- never answered status and printed jobs (sent without asking) are taken for such (the verify75 probe: a printer
-- renamed at the new version's first start, then a crash, lost an order to the clear). Those learnt to answer DLE EOT
-- but not GS r are read from their own keys.

-- migrate:up
INSERT OR IGNORE INTO meta(key, value)
SELECT 'marked_held:' || d.value, '' FROM meta AS d
WHERE substr(d.key, 1, 15) = 'printer_device:'
  AND NOT EXISTS (SELECT 1 FROM meta AS a WHERE a.key = 'answered_status:' || d.value)
  AND EXISTS (SELECT 1 FROM print_jobs AS j WHERE j.printer = substr(d.key, 16) AND j.state = 'printed');

-- migrate:down
DELETE FROM meta WHERE substr(key, 1, 12) = 'marked_held:';
