// Package messaging runs and connects to NATS JetStream, Hodei's event transport.
//
// Events leave the system only through the outbox relay (package outbox), which publishes
// each event row to JetStream with the row's outbox id as the Nats-Msg-Id header, so a
// re-publish after a crash (published, but not yet marked COMPLETED) is dropped by the
// stream's duplicate window.
//
// Subjects:
//
//	hodei.events.<entity>.<type>    e.g. hodei.events.job.succeeded, hodei.events.worker.ready
//
// All of them are captured by one stream, HODEI_EVENTS (subjects "hodei.events.>", file
// storage, duplicate window DuplicateWindow). Consumers create their own durable consumers
// on that stream with subject filters.
//
// When no NATS URL is configured the server (and the tests) start an embedded nats-server
// with JetStream enabled (StartEmbedded), listening on 127.0.0.1 and a random port unless
// told otherwise.
package messaging
