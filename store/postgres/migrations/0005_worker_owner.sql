-- The node (control-plane replica) that created a worker: operations on workers of
-- node-local providers are routed there (provider/routing). '' on rows from before.
ALTER TABLE workers ADD COLUMN owner text NOT NULL DEFAULT '';
