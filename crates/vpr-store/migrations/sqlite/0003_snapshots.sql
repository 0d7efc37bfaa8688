-- Still frames officers save from a call: the file lives on the server's
-- disk under the snapshot directory; the record keeps its SHA-256 so the
-- file can be checked against it later.
CREATE TABLE snapshots (
    snapshot_id    TEXT   NOT NULL PRIMARY KEY,
    room_id        TEXT   NOT NULL REFERENCES sessions (room_id),
    participant_id TEXT   NOT NULL REFERENCES participants (participant_id),
    sha256         TEXT   NOT NULL,
    content_type   TEXT   NOT NULL,
    size_bytes     BIGINT NOT NULL,
    path           TEXT   NOT NULL,
    taken_at_ms    BIGINT NOT NULL
);

CREATE INDEX snapshots_room_id ON snapshots (room_id, taken_at_ms);
