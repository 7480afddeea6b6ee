-- Scanned tickets: which station's ticket of an order is done, when the order became ready / was handed out, every scan.

-- migrate:up
CREATE TABLE scans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    scanned_at  REAL NOT NULL,                -- our clock, unix seconds
    scanner     TEXT NOT NULL,                -- configured scanner name
    code        TEXT NOT NULL,                -- the text as read
    order_id    TEXT,                         -- NULL when the code named no order we know
    station     TEXT,
    outcome     TEXT NOT NULL
                CHECK (outcome IN ('ticket_done', 'order_ready', 'handed_out', 'already_done', 'unknown')),
    detail      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX scans_order ON scans(order_id);

-- One row per station whose ticket was scanned done; the order is ready when every ticket station has a row.
CREATE TABLE station_done (
    order_id  TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    station   TEXT NOT NULL,
    done_at   REAL NOT NULL,
    scan_id   INTEGER NOT NULL,                -- the scan that did it (scans.id)
    PRIMARY KEY (order_id, station)
);

-- A row only once the order is ready; handed_out_at once it left the counter.
CREATE TABLE order_pickup (
    order_id       TEXT PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE,
    ready_at       REAL NOT NULL,
    handed_out_at  REAL
);

-- Plain codes may be an order number (read from a receipt): found by number, newest first.
CREATE INDEX orders_number ON orders(number, received_at);

-- migrate:down
DROP INDEX orders_number;
DROP TABLE order_pickup;
DROP TABLE station_done;
DROP TABLE scans;
