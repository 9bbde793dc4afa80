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
// told otherwise. With Options.ClusterListen and Routes the embedded servers of several
// replicas form a NATS cluster.
//
// # Clusters and old servers
//
// In a cluster the streams are replicated (EnsureEventsStream's replicas; natsq's
// QueueConfig.Replicas; DefaultReplicas is 3 when the server reports a cluster name) and
// their consumers inherit the replicas, so one node of three may die. EnsureStream and
// EnsureConsumer read the existing configuration first and update only when it differs:
// an update of a replicated stream can wait for an unreachable node, a read does not,
// and a replica must be able to start while a node is down. A node that was down catches
// up on its own; two nodes behind at once are two failures, more than R3 tolerates.
//
// CheckServer refuses servers older than MinServerVersion (2.9.0) or without JetStream.
// Consumers with several filter subjects need 2.10 (ServerHasMultiFilter); on 2.9 the
// orchestrator's consumer takes every event with one wildcard filter and acknowledges
// the ones it has no route for. Tests run against real nats-server processes of both
// lines (internal/natstest).
package messaging
