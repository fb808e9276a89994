-- The run ledger (mesh.host.postgres_ledger): each agent's claimed run ids, shared by its
-- replicas. A row keeps the task's hash, never the task.
CREATE TABLE mesh_run_ledger (
    agent text NOT NULL,
    run_id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,  -- claim order: the oldest are forgotten first
    task_sha256 text NOT NULL,
    started double precision NOT NULL,  -- seconds since the epoch, as time.time()
    finished double precision,
    error text,
    response bytea,  -- the serialized RunResponse of a finished unary run, when kept
    response_bytes integer,  -- its size, whether kept or not
    bytes integer NOT NULL CHECK (bytes >= 0),  -- what the row counts against its agent
    PRIMARY KEY (agent, run_id)
);
CREATE INDEX mesh_run_ledger_finished ON mesh_run_ledger (agent, seq)
    WHERE finished IS NOT NULL;
CREATE INDEX mesh_run_ledger_started ON mesh_run_ledger (agent, started);

-- What each agent's rows count, kept exact by every write in its own transaction (and the
-- row each writer of the agent locks first, so that writers take turns).
CREATE TABLE mesh_run_ledger_usage (
    agent text PRIMARY KEY,
    bytes bigint NOT NULL CHECK (bytes >= 0)
);
