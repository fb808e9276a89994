-- Conversations (mesh.host.postgres_sessions): the turns of each session, per agent.
-- Session ids sort as bytes (COLLATE "C"), as in the SQLite store, so that page tokens
-- mean the same whatever the database's locale.

CREATE TABLE mesh_sessions (
    agent text NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    created double precision NOT NULL,
    updated double precision NOT NULL,
    turn_count integer NOT NULL,
    dropped_turns integer NOT NULL,
    bytes bigint NOT NULL,  -- the bodies of its turns
    PRIMARY KEY (agent, session_id)
);
CREATE INDEX mesh_sessions_by_update ON mesh_sessions (agent, updated, session_id);

CREATE TABLE mesh_session_turns (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent text NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    run_id text NOT NULL,
    time double precision NOT NULL,
    steps integer NOT NULL,
    bytes integer NOT NULL,
    body bytea NOT NULL,  -- the turn's JSON, UTF-8
    FOREIGN KEY (agent, session_id) REFERENCES mesh_sessions ON DELETE CASCADE
);
CREATE INDEX mesh_session_turns_by_session ON mesh_session_turns (agent, session_id, id);

-- What the budget counts, per agent, changed in the transactions that change the turns;
-- every write takes this row's lock first, so that an agent's writers queue in one order.
CREATE TABLE mesh_session_usage (
    agent text PRIMARY KEY,
    bytes bigint NOT NULL
);

-- Who holds a session: the claim itself is an advisory lock on lock_key, held by the
-- holder's connection; this row only names the run, for whoever is refused.
CREATE TABLE mesh_session_claims (
    agent text NOT NULL,
    session_id text COLLATE "C" NOT NULL,
    run_id text NOT NULL,
    lock_key bigint NOT NULL,
    token text NOT NULL,
    since double precision NOT NULL,
    PRIMARY KEY (agent, session_id)
);
