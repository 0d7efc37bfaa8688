-- Tables and columns for the control plane: participant removal and
-- permissions, track mute, consent, the hash-chained audit log and a quality
-- summary per participant.
--
-- PostgreSQL version of migrations/sqlite/0002_control_plane.sql, with the
-- same tables and columns.

ALTER TABLE participants ADD COLUMN badge_id TEXT NOT NULL DEFAULT '';
ALTER TABLE participants ADD COLUMN can_publish BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE participants ADD COLUMN can_subscribe BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE participants ADD COLUMN removed_at_ms BIGINT NULL;
ALTER TABLE participants ADD COLUMN removed_reason TEXT NULL;

CREATE INDEX participants_room_id_identity_idx ON participants (room_id, identity);

ALTER TABLE tracks ADD COLUMN muted BOOLEAN NOT NULL DEFAULT false;

-- The latest consent of each participant. Recording consent again replaces it.
CREATE TABLE consents (
    participant_id  TEXT    NOT NULL PRIMARY KEY REFERENCES participants (participant_id),
    room_id         TEXT    NOT NULL REFERENCES sessions (room_id),
    live_video      BOOLEAN NOT NULL,
    audio           BOOLEAN NOT NULL,
    recording       BOOLEAN NOT NULL,
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

-- DOUBLE PRECISION, because PostgreSQL's REAL is 4 bytes and the Rust type is f64.
CREATE TABLE quality (
    participant_id TEXT             NOT NULL PRIMARY KEY REFERENCES participants (participant_id),
    bitrate_kbps   DOUBLE PRECISION NOT NULL,
    packet_loss    DOUBLE PRECISION NOT NULL,
    rtt_ms         DOUBLE PRECISION NOT NULL,
    layer_changes  BIGINT           NOT NULL,
    updated_at_ms  BIGINT           NOT NULL
);
