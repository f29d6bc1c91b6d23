-- The ENT directory (the ENT is its source of truth and provisions it through the admin API),
-- the communication rules and profile access per structure, and the audit log.

CREATE TABLE structures (
    id   TEXT NOT NULL PRIMARY KEY,   -- the school's UAI
    name TEXT NOT NULL
);

-- A directory entry for an account: who the user is for the policy.
CREATE TABLE directory_users (
    username     TEXT    NOT NULL PRIMARY KEY,
    display_name TEXT    NOT NULL,
    -- 'student', 'teacher', 'parent', 'staff' or 'partner'.
    profile      TEXT    NOT NULL,
    -- 1 when the user asked not to appear in the directory search.
    hidden       BIGINT  NOT NULL DEFAULT 0,
    -- Unix seconds of the first login; only users who logged in once can be found.
    first_login  BIGINT
);

CREATE TABLE structure_members (
    structure_id TEXT NOT NULL REFERENCES structures (id) ON DELETE CASCADE,
    username     TEXT NOT NULL REFERENCES directory_users (username) ON DELETE CASCADE,
    PRIMARY KEY (structure_id, username)
);

CREATE TABLE classes (
    id           TEXT NOT NULL PRIMARY KEY,
    structure_id TEXT NOT NULL REFERENCES structures (id) ON DELETE CASCADE,
    name         TEXT NOT NULL
);

CREATE TABLE class_members (
    class_id TEXT NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES directory_users (username) ON DELETE CASCADE,
    PRIMARY KEY (class_id, username)
);

-- ENT groups: any mix of users; sharing one allows communication whatever the rules say.
CREATE TABLE ent_groups (
    id   TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES ent_groups (id) ON DELETE CASCADE,
    username TEXT NOT NULL REFERENCES directory_users (username) ON DELETE CASCADE,
    PRIMARY KEY (group_id, username)
);

CREATE TABLE parent_links (
    parent TEXT NOT NULL REFERENCES directory_users (username) ON DELETE CASCADE,
    child  TEXT NOT NULL REFERENCES directory_users (username) ON DELETE CASCADE,
    PRIMARY KEY (parent, child)
);

-- Chat access per structure and profile; no row means the default: on.
CREATE TABLE profile_access (
    structure_id TEXT    NOT NULL REFERENCES structures (id) ON DELETE CASCADE,
    profile      TEXT    NOT NULL,
    enabled      BIGINT  NOT NULL,
    PRIMARY KEY (structure_id, profile)
);

-- Communication rules per structure; no row means the shipped default for that cell.
CREATE TABLE communication_rules (
    structure_id TEXT NOT NULL REFERENCES structures (id) ON DELETE CASCADE,
    from_profile TEXT NOT NULL,
    to_profile   TEXT NOT NULL,
    -- 'none', 'same_class', 'same_structure' or 'any'.
    scope        TEXT NOT NULL,
    PRIMARY KEY (structure_id, from_profile, to_profile)
);

CREATE TABLE audit_log (
    id     BIGSERIAL PRIMARY KEY,
    at     BIGINT  NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    detail TEXT    NOT NULL
);
