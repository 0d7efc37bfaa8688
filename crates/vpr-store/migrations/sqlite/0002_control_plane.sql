-- Tables and columns for the control plane: participant removal and
-- permissions, track mute, consent, the hash-chained audit log and a quality
-- summary per participant.
--
-- SQLite version. migrations/postgres/0002_control_plane.sql holds the same
-- tables, with BOOLEAN where this file has INTEGER 0/1 and DOUBLE PRECISION
-- where it has REAL.

ALTER TABLE participants ADD COLUMN badge_id TEXT NOT NULL DEFAULT '';
ALTER TABLE participants ADD COLUMN can_publish INTEGER NOT NULL DEFAULT 1
    CHECK (can_publish IN (0, 1));
ALTER TABLE participants ADD COLUMN can_subscribe INTEGER NOT NULL DEFAULT 1
    CHECK (can_subscribe IN (0, 1));
ALTER TABLE participants ADD COLUMN removed_at_ms BIGINT NULL;
ALTER TABLE participants ADD COLUMN removed_reason TEXT NULL;

CREATE INDEX participants_room_id_identity_idx ON participants (room_id, identity);

ALTER TABLE tracks ADD COLUMN muted INTEGER NOT NULL DEFAULT 0 CHECK (muted IN (0, 1));

-- The latest consent of each participant. Recording consent again replaces it.
CREATE TABLE consents (
    participant_id  TEXT    NOT NULL PRIMARY KEY REFERENCES participants (participant_id),
    room_id         TEXT    NOT NULL REFERENCES sessions (room_id),
    live_video      INTEGER NOT NULL CHECK (live_video IN (0, 1)),
    audio           INTEGER NOT NULL CHECK (audio IN (0, 1)),
    recording       INTEGER NOT NULL CHECK (recording IN (0, 1)),
    channel         TEXT    NOT NULL,
    consented_at_ms BIGINT  NOT NULL
);

CREATE INDEX consents_room_id_idx ON consents (room_id);

-- Hash chain of control plane calls. The store assigns seq as the previous
-- seq + 1, so two appends that read the same chain head collide on the
-- primary key instead of forking the chain.
CREATE TABLE audit_log (
    seq       BIGINT NOT NULL PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    key_id    TEXT   NOT NULL,
    action    TEXT   NOT NULL,
    arguments TEXT   NOT NULL,
    prev_hash TEXT   NOT NULL,
    hash      TEXT   NOT NULL
);

CREATE TABLE quality (
    participant_id TEXT   NOT NULL PRIMARY KEY REFERENCES participants (participant_id),
    bitrate_kbps   REAL   NOT NULL,
    packet_loss    REAL   NOT NULL,
    rtt_ms         REAL   NOT NULL,
    layer_changes  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
