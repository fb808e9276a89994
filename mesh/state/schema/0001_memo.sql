-- The memo tool's entries (mesh.state.memo): JSON text under (namespace, key).
-- Keys sort as SQLite sorts them, by their bytes (collation "C").
CREATE TABLE mesh_memo (
    namespace text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value text NOT NULL,
    bytes integer NOT NULL CHECK (bytes >= 0),  -- the key's and the value's UTF-8 bytes
    PRIMARY KEY (namespace, key)
);

-- What each namespace's entries hold, kept exact by every write in its own transaction
-- (and the row each writer of the namespace locks first, so that writers take turns).
CREATE TABLE mesh_memo_usage (
    namespace text PRIMARY KEY,
    bytes bigint NOT NULL CHECK (bytes >= 0)
);
