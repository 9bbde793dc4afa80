package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// KeySize is the size of a secrets key: AES-256.
const KeySize = 32

// Flags and variables that name the key files (errors name them).
const (
	KeyFileFlag    = "--secrets-key-file"
	KeyFileEnv     = "HODEI_SECRETS_KEY_FILE"
	OldKeyFileFlag = "--secrets-old-key-file"
)

// ErrNoKey: a secret was set or used on a server started without a key.
var ErrNoKey = errors.New("secrets: this server has no secrets key: start hodei server with " +
	KeyFileFlag + " (or " + KeyFileEnv + ") naming a file of " + "32 random bytes")

// ErrUnknownKey: a value is sealed under a key the keyring does not hold.
var ErrUnknownKey = errors.New("secrets: value sealed under an unknown key")

// Keyring holds the current key (new values are sealed under it) and old keys (they
// only open values). Safe for concurrent use; immutable after creation.
type Keyring struct {
	current string
	aeads   map[string]cipher.AEAD
}

// KeyID is the id recorded with each value sealed under key: a short hash of it.
func KeyID(key []byte) string {
	h := sha256.New()
	h.Write([]byte("hodei-secrets-key-id\x00"))
	h.Write(key)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// NewKeyring returns a keyring sealing under current and opening under current and
// old. Every key must be KeySize bytes.
func NewKeyring(current []byte, old ...[]byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	for i, key := range append([][]byte{current}, old...) {
		if len(key) != KeySize {
			return nil, fmt.Errorf("secrets: key %d is %d bytes, need %d", i, len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %d: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secrets: key %d: %w", i, err)
		}
		id := KeyID(key)
		if i == 0 {
			k.current = id
		}
		k.aeads[id] = aead
	}
	return k, nil
}

// LoadKeyring reads the current key from currentFile (KeyFileFlag) and old keys from
// oldFiles (OldKeyFileFlag). An empty currentFile returns (nil, nil): a server without
// secrets. Errors name the flag and the file, never the key.
func LoadKeyring(currentFile string, oldFiles []string) (*Keyring, error) {
	if currentFile == "" {
		if len(oldFiles) > 0 {
			return nil, fmt.Errorf("secrets: %s given without %s", OldKeyFileFlag, KeyFileFlag)
		}
		return nil, nil
	}
	cur, err := readKeyFile(KeyFileFlag, currentFile)
	if err != nil {
		return nil, err
	}
	var old [][]byte
	for _, f := range oldFiles {
		k, err := readKeyFile(OldKeyFileFlag, f)
		if err != nil {
			return nil, err
		}
		old = append(old, k)
	}
	return NewKeyring(cur, old...)
}

// readKeyFile reads a key: exactly 32 bytes, or 64 hex digits, or base64 of 32 bytes
// (surrounding white space ignored for the text forms).
func readKeyFile(flag, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: %s %s: %w", flag, path, err)
	}
	if len(b) == KeySize {
		return b, nil
	}
	t := bytes.TrimSpace(b)
	if k, err := hex.DecodeString(string(t)); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(string(t)); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("secrets: %s %s: the file holds %d bytes; a key is exactly %d random bytes, "+
		"or 64 hex digits, or their base64 (e.g. head -c 32 /dev/urandom > %s)", flag, path, len(b), KeySize, path)
}

// CurrentID is the id of the key new values are sealed under.
func (k *Keyring) CurrentID() string { return k.current }

// Has reports whether the keyring can open values sealed under keyID.
func (k *Keyring) Has(keyID string) bool { _, ok := k.aeads[keyID]; return ok }

// aad binds a ciphertext to the secret it belongs to.
func aad(namespace, name string) []byte {
	return []byte("hodei-secret\x00" + namespace + "\x00" + name)
}

// Seal encrypts value for secret namespace/name under the current key: it returns the
// key id and nonce || ciphertext.
func (k *Keyring) Seal(namespace, name string, value []byte) (string, []byte, error) {
	aead := k.aeads[k.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(value)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, fmt.Errorf("secrets: nonce: %w", err)
	}
	return k.current, aead.Seal(nonce, nonce, value, aad(namespace, name)), nil
}

// Open decrypts what Seal returned for secret namespace/name.
func (k *Keyring) Open(namespace, name, keyID string, sealed []byte) ([]byte, error) {
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: secret %s/%s is sealed under key %s; start the server with that key in %s",
			ErrUnknownKey, namespace, name, keyID, OldKeyFileFlag)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, fmt.Errorf("secrets: secret %s/%s: ciphertext too short", namespace, name)
	}
	n := aead.NonceSize()
	v, err := aead.Open(nil, sealed[:n], sealed[n:], aad(namespace, name))
	if err != nil {
		return nil, fmt.Errorf("secrets: secret %s/%s does not open under key %s (altered, or moved from another secret)",
			namespace, name, keyID)
	}
	return v, nil
}
