// Package secrets keeps job secrets: values encrypted at rest, decrypted only to be
// handed to the worker that runs a job naming them.
//
// Where each form of a value lives, and who sees plaintext:
//
//   - In: `hodei secret set NAME --namespace N` reads the value from stdin (never
//     argv) and sends it in SetSecret over the API connection (TLS when configured).
//     The API handler passes it to Manager.Set, which seals it and forgets it: it is
//     never logged, audited (the audit record names namespace/name only) or returned.
//   - At rest: table secrets holds nonce || AES-256-GCM(value) with the id of the key
//     (Keyring: the first 8 bytes of SHA-256 over a label and the key, in hex). The
//     additional data binds a ciphertext to its namespace and name, so a row copied
//     onto another secret does not open. The key comes from a file
//     (`hodei server --secrets-key-file` / HODEI_SECRETS_KEY_FILE, 32 bytes raw, 64
//     hex digits or base64); older keys (`--secrets-old-key-file`, repeatable) only
//     open values until `hodei secret rotate-key` re-seals them under the current key.
//   - Jobs: domain.JobSpec carries references only (domain.SecretRef: name and
//     variable). The API checks at submit that each name exists in the job's
//     namespace (Manager.Check). Specs, API responses, outbox payloads, saga history
//     and provider specs (the worker's argv and environment, a container's config)
//     therefore never hold a value.
//   - Delivery: the replica holding the worker's authenticated stream decrypts the
//     job's secrets (Manager.Resolve) just before it puts RunJob on that stream
//     (RunJob.secret_env). The NATS hop between replicas carries the message without
//     values. Nothing else on the server decrypts.
//   - Worker: the agent sets each value in the job process's environment only (not
//     its own, not argv) and masks every value in the job's output (agent/mask.go)
//     before a log line is batched, so stored and streamed logs show "***", also when
//     the job wrote a value in two pieces, and also its JSON-escaped, URL-encoded and
//     base64 forms (maskedForms lists what is not covered).
//
// Plaintext is thus seen by the CLI that sets it, the API handler that seals it, the
// replica's stream handler that sends it, the agent and the job. Errors name secrets
// by namespace and name, never by value.
package secrets
