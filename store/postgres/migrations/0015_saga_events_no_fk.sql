-- Saga events are only ever inserted by the statement that also updates (or inserts)
-- their saga's row, with the saga's id taken from that row (store/postgres/saga.go:
-- eventsSelect), and saga rows are never deleted. The foreign key from saga_events to
-- sagas therefore protected nothing, while it cost a FOR KEY SHARE lookup of the saga
-- row for every event inserted (about a quarter of an append's time, issue 16). Code
-- that deletes a saga must delete its events itself.
ALTER TABLE saga_events DROP CONSTRAINT IF EXISTS saga_events_saga_id_fkey;
