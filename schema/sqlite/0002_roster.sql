-- Rosters (RFC 6121 §2) with their groups (the manual's categories), explicitly created empty
-- categories, pending inbound subscription requests ("Mes demandes") and offline messages.

CREATE TABLE roster_items (
    username     TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    contact      TEXT    NOT NULL,
    name         TEXT,
    -- 'none', 'to', 'from' or 'both' (RFC 6121 §2.1.2.5).
    subscription TEXT    NOT NULL DEFAULT 'none',
    -- 1 while our subscription request is pending: ask='subscribe' ("Invitation en attente").
    ask          INTEGER NOT NULL DEFAULT 0,
    -- 1 when we pre-approved the contact's subscription (RFC 6121 §3.4).
    approved     INTEGER NOT NULL DEFAULT 0,
    -- 1 when the contact refused our request ("Invitation refusée"), until we ask again.
    refused      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (username, contact)
);

CREATE TABLE roster_groups (
    username TEXT NOT NULL,
    contact  TEXT NOT NULL,
    name     TEXT NOT NULL,
    PRIMARY KEY (username, contact, name),
    FOREIGN KEY (username, contact) REFERENCES roster_items (username, contact) ON DELETE CASCADE
);

-- Categories created empty; a row goes once a contact is in the category, which then lives on
-- through roster_groups.
CREATE TABLE empty_categories (
    username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    name     TEXT NOT NULL,
    PRIMARY KEY (username, name)
);

-- XEP-0237 roster version: bumped by every change of the user's roster or categories.
CREATE TABLE roster_versions (
    username TEXT   NOT NULL PRIMARY KEY REFERENCES users (username) ON DELETE CASCADE,
    version  BIGINT NOT NULL
);

-- Inbound subscription requests not yet answered (RFC 6121 §3.1.3), delivered at every login.
CREATE TABLE subscription_requests (
    username   TEXT   NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    requester  TEXT   NOT NULL,
    status     TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (username, requester)
);

-- XEP-0160 offline storage, delivered in id order at the next login.
CREATE TABLE offline_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    username   TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    stanza     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX offline_messages_by_user ON offline_messages (username, id);
