-- 0009_secrets: job secrets. Only ciphertext is stored (nonce || AES-256-GCM sealed
-- value, package secrets) with the id of the key it is sealed under, so that a key
-- rotation finds the values under old keys. Times are Unix nanoseconds.

CREATE TABLE secrets (
    namespace   TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE INDEX secrets_key_id_idx ON secrets (key_id);
