-- 0009_secrets: job secrets. Only ciphertext is stored (nonce || AES-256-GCM sealed
-- value, package secrets) with the id of the key it is sealed under, so that a key
-- rotation finds the values under old keys.

CREATE TABLE secrets (
    namespace   text        NOT NULL,
    name        text        NOT NULL,
    key_id      text        NOT NULL,
    ciphertext  bytea       NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX secrets_key_id_idx ON secrets (key_id);
