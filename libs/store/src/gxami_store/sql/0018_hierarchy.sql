-- Where energy is used: the site -> building -> feeder/floor tree from the fleet file, each meter's
-- place in it, and main meters with their submeters. Written by the scheduler's fleet import;
-- read by the reports service and by BI through the meter_hierarchy view.

-- A node is named by its path from the root ('site-a/building-1/floor-2'); its parent is the path
-- less the last segment (NULL for a site). Paths sort so that a node's subtree is a prefix range.
CREATE TABLE IF NOT EXISTS hierarchy_nodes (
    node_path   text PRIMARY KEY CHECK (node_path <> '' AND node_path !~ '(^/|/$|//)'),
    parent_path text REFERENCES hierarchy_nodes(node_path) ON DELETE CASCADE,
    name        text NOT NULL,
    depth       integer NOT NULL CHECK (depth >= 1)
);
CREATE INDEX IF NOT EXISTS hierarchy_nodes_parent ON hierarchy_nodes (parent_path);

-- A meter's node (NULL: not placed in the tree) and the main meter it is a submeter of (NULL: none).
CREATE TABLE IF NOT EXISTS meter_nodes (
    meter_id    text PRIMARY KEY REFERENCES meters(meter_id) ON DELETE CASCADE,
    node_path   text REFERENCES hierarchy_nodes(node_path) ON DELETE SET NULL,
    submeter_of text REFERENCES meters(meter_id) ON DELETE SET NULL,
    CHECK (submeter_of IS DISTINCT FROM meter_id)
);
CREATE INDEX IF NOT EXISTS meter_nodes_node ON meter_nodes (node_path);
CREATE INDEX IF NOT EXISTS meter_nodes_main ON meter_nodes (submeter_of);

CREATE OR REPLACE VIEW meter_hierarchy AS
SELECT n.meter_id, n.node_path, n.submeter_of, h.depth,
       split_part(n.node_path, '/', 1) AS site
  FROM meter_nodes n
  LEFT JOIN hierarchy_nodes h USING (node_path);

COMMENT ON VIEW meter_hierarchy IS
  'Each meter''s node in the site/building/floor tree and the main meter it is a submeter of.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_reader') THEN
        GRANT SELECT ON meter_hierarchy TO bi_reader;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'meter_hierarchy not granted to bi_reader (%)', SQLERRM;
END $$;
