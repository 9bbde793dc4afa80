// Package natsq implements the saga engine's TaskQueue and Waker seams on NATS.
//
// # Task queue (JetStream)
//
// TaskQueue keeps one work-queue stream (default HODEI_SAGA_TASKS, subjects
// "hodei.saga.tasks.>", retention WorkQueuePolicy) read by one durable pull consumer
// shared by every runner (default "hodei-saga-runners", explicit ack). A task is a
// message on "hodei.saga.tasks.run" whose payload is the saga id; the id is not put in
// the subject because saga ids are chosen by callers and need not be valid subject
// tokens.
//
//	Enqueue ──► stream (work queue) ──► durable pull consumer ──► Tasks() ──► runner
//	                                          │  no ack within AckWait: redelivered
//	                                          │  MaxDeliver deliveries: advisory
//	                                          ▼
//	  $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>
//	      ──► fetch the message by stream sequence ──► OnDeadTask(ctx, sagaID, n)
//	      ──► delete the message
//
// Ack removes the message (work-queue retention); Nak(delay) is a JetStream
// nak-with-delay. A message that is neither acked nor naked is redelivered after AckWait
// (default 30s), at most MaxDeliver times (default 5). The server then stops delivering
// it and publishes a max-deliveries advisory; the queue (every process that called
// Tasks, as one NATS queue group, so each advisory is handled once) reads the message,
// calls Config.OnDeadTask so that the failure is recorded, and deletes the message.
// RecordDeadTask records it in the saga's history as an incident of kind
// DeadTaskIncident (Engine.RecordIncident: an event the saga's state ignores, so a
// waiting step is not woken by it); the saga itself stays in the database and the
// runner's poll keeps it going. Advisories are core NATS
// messages: one published while no process listens is lost, and the message stays in
// the stream (harmless; the database is the source of truth).
//
// Deduplication: each Enqueue publishes with Nats-Msg-Id "<saga id>/<queue
// instance>/<counter>", unique per call. JetStream therefore only drops the client's
// own retransmissions of one publish, never a second, legitimate Enqueue of the same
// saga (a saga is enqueued again each time it becomes runnable: started, signalled,
// timer fired). Surplus tasks are cheap: the runner's claim of the saga row decides who
// runs it, and a task for a saga that is not runnable is simply acked.
//
// # Waker (core NATS)
//
// Waker publishes the saga id to the core subject "hodei.saga.wake" (payload = id) and
// every Wakeups subscriber in every process receives it. Wake-ups are fire-and-forget;
// a lost one costs only latency because the runner polls the database.
package natsq
