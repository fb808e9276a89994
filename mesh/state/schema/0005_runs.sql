-- Run records and event logs shared by every replica of an agent (mesh.host.shared_runs).
-- A record and an event are kept as the bytes the service's codec gives (wire messages);
-- the columns beside them are what queries filter and page on.
CREATE TABLE mesh_runs (
    agent text NOT NULL,
    run_id text NOT NULL,
    sequence bigserial NOT NULL,
    replica text NOT NULL,
    status text NOT NULL,
    created double precision NOT NULL,
    ended double precision,
    session_id text NOT NULL,
    record bytea NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (agent, run_id)
);
CREATE INDEX mesh_runs_newest ON mesh_runs (agent, sequence);
CREATE INDEX mesh_runs_by_end ON mesh_runs (agent, ended) WHERE ended IS NOT NULL;
CREATE INDEX mesh_runs_going ON mesh_runs (replica) WHERE ended IS NULL;

CREATE TABLE mesh_run_events (
    agent text NOT NULL,
    run_id text NOT NULL,
    index integer NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (agent, run_id, index)
);

-- What each agent's runs take, kept exactly as rows come and go.
CREATE TABLE mesh_run_usage (agent text PRIMARY KEY, bytes bigint NOT NULL);

-- Each replica's heartbeat: a run whose replica stopped beating is over (it failed).
CREATE TABLE mesh_replicas (
    replica text PRIMARY KEY,
    agent text NOT NULL,
    seen double precision NOT NULL
);
