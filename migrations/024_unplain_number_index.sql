-- Today's orders whose number may print otherwise than it was sent: one with a character other than printable ASCII
-- (full-width "Ａ-１０４２", a zero-width space inside, Cyrillic "Щ-1047" printed "Shch-1047"). A number typed or read
-- off a ticket is compared with how theirs print (the inject81 probe, F1); plain ASCII ones print as sent and are
-- found by orders_number. By the day of the order's own created_at, as numbers come round. Most stores have none.

-- migrate:up
CREATE INDEX orders_unplain_number ON orders(julianday(created_at)) WHERE number GLOB '*[^ -~]*';

-- migrate:down
DROP INDEX orders_unplain_number;
