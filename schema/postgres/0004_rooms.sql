-- Conversations (XEP-0045 rooms) that outlive their occupants: configured, persistent rooms
-- with their affiliations and their recent history. A locked room (never configured) and a
-- temporary room live in memory only.

CREATE TABLE rooms (
    -- The room's localpart at the conference service.
    name       TEXT    NOT NULL PRIMARY KEY,
    -- The room's configuration as JSON (muc/form.rs, RoomConfig).
    config     TEXT    NOT NULL,
    -- 1 when listed in the public directory (disco#items on the service).
    public     BIGINT  NOT NULL DEFAULT 0,
    subject    TEXT,
    subject_by TEXT,
    -- The room's vCard (XEP-0054): its logo.
    vcard      TEXT,
    created_at BIGINT  NOT NULL
);
CREATE INDEX rooms_public ON rooms (public, name);

CREATE TABLE room_affiliations (
    room        TEXT NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
    -- The affiliated user's bare JID.
    jid         TEXT NOT NULL,
    -- 'owner', 'admin', 'member' or 'outcast'; 'none' is no row.
    affiliation TEXT NOT NULL,
    PRIMARY KEY (room, jid)
);
CREATE INDEX room_affiliations_by_jid ON room_affiliations (jid, affiliation);

CREATE TABLE room_history (
    id         BIGSERIAL PRIMARY KEY,
    room       TEXT   NOT NULL REFERENCES rooms (name) ON DELETE CASCADE,
    -- The groupchat message as broadcast, without its recipient.
    stanza     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX room_history_by_room ON room_history (room, id);
