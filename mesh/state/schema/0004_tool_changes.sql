-- The tool-change log of each agent (mesh.rpc.postgres_tool_changes): run-time changes
-- (added, replaced, removed) and start-up definition records, in the order of id.
-- The change itself is its JSON text, as the file log keeps it: JSON that ``json`` and
-- ``jsonb`` refuse (NaN in a tool's default, an escaped NUL) must round-trip all the same.
CREATE TABLE mesh_tool_changes (
    id bigserial PRIMARY KEY,
    agent text NOT NULL,
    action text NOT NULL,
    record text NOT NULL,
    recorded timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mesh_tool_changes_by_agent ON mesh_tool_changes (agent, id);
