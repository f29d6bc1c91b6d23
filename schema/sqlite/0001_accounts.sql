-- Accounts and their SCRAM credentials (RFC 5802, RFC 7677). Neither the password nor the
-- salted password is ever stored: only what a SCRAM server needs.
CREATE TABLE users (
    username   TEXT    NOT NULL PRIMARY KEY,
    created_at BIGINT  NOT NULL
);

CREATE TABLE credentials (
    username   TEXT    NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    -- 'SCRAM-SHA-1' or 'SCRAM-SHA-256': the hash family, shared by the -PLUS variant.
    mechanism  TEXT    NOT NULL,
    salt       BLOB    NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB    NOT NULL,
    server_key BLOB    NOT NULL,
    PRIMARY KEY (username, mechanism)
);
