-- Session record schema: one row per room (a call), its participants, their
-- tracks and an append-only event log.
--
-- Written to run unchanged on SQLite and PostgreSQL, except `events.seq`
-- (see below). Times are unix milliseconds (UTC) in BIGINT columns, because
-- PostgreSQL's INTEGER is 32 bits wide.

CREATE TABLE sessions (
    room_id          TEXT    NOT NULL PRIMARY KEY,
    incident_id      TEXT    NOT NULL,
    request_id       TEXT    NOT NULL,
    call_type        TEXT    NOT NULL DEFAULT '',
    max_participants BIGINT  NOT NULL,
    metadata         TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL CHECK (state IN ('open', 'closed')),
    created_at_ms    BIGINT  NOT NULL,
    ended_at_ms      BIGINT  NULL,
    end_reason       TEXT    NULL,
    disposition      TEXT    NULL,
    notes            TEXT    NULL,
    UNIQUE (incident_id, request_id)
);

CREATE INDEX sessions_state_idx ON sessions (state);

CREATE TABLE participants (
    participant_id TEXT   NOT NULL PRIMARY KEY,
    room_id        TEXT   NOT NULL REFERENCES sessions (room_id),
    identity       TEXT   NOT NULL,
    display_name   TEXT   NOT NULL DEFAULT '',
    role           TEXT   NOT NULL CHECK (role IN ('resident', 'officer', 'observer', 'dispatcher')),
    admitted_at_ms BIGINT NOT NULL,
    joined_at_ms   BIGINT NULL,
    left_at_ms     BIGINT NULL,
    leave_reason   TEXT   NULL
);

CREATE INDEX participants_room_id_idx ON participants (room_id);

CREATE TABLE tracks (
    track_id          TEXT   NOT NULL PRIMARY KEY,
    room_id           TEXT   NOT NULL REFERENCES sessions (room_id),
    participant_id    TEXT   NOT NULL REFERENCES participants (participant_id),
    kind              TEXT   NOT NULL CHECK (kind IN ('audio', 'video')),
    codec             TEXT   NOT NULL,
    published_at_ms   BIGINT NOT NULL,
    unpublished_at_ms BIGINT NULL
);

CREATE INDEX tracks_room_id_idx ON tracks (room_id);
CREATE INDEX tracks_participant_id_idx ON tracks (participant_id);

-- participant_id and track_id carry no foreign key, because an event may name
-- a participant that was never admitted (a rejected join, for example).
CREATE TABLE events (
    -- PostgreSQL: `seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY`.
    -- AUTOINCREMENT keeps SQLite from reusing the seq of a deleted last row.
    seq            INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    room_id        TEXT    NOT NULL REFERENCES sessions (room_id),
    kind           TEXT    NOT NULL,
    participant_id TEXT    NULL,
    track_id       TEXT    NULL,
    detail         TEXT    NOT NULL DEFAULT '',
    at_ms          BIGINT  NOT NULL
);

CREATE INDEX events_room_id_seq_idx ON events (room_id, seq);
