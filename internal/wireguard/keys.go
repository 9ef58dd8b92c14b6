package wireguard

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/trellisnet/trellis/internal/atomicfile"
)

// The key file holds the node's private key the way wg(8) writes one (`wg
// genkey`): the 32 bytes in standard base64, one line. It is mode 0600 in a
// directory created 0700. Reading it is strict: a file that is empty,
// corrupt, of the wrong size, not a regular file, or readable by anyone but
// its owner is an error that names the file and what to do. A new key is
// made only when the file does not exist, never in place of a file that
// cannot be read: a node that silently took a new key would publish it and
// every peer would rebuild its tunnel to it, and a node whose disk was
// damaged should be noticed, not papered over.

// keyFileMode is the key file's permission bits.
const keyFileMode fs.FileMode = 0o600

// maxKeyFileSize bounds what LoadKey reads: a key file is 45 bytes.
const maxKeyFileSize = 1024

// LoadOrCreateKey returns the private key in path. When path does not
// exist it generates a key, writes it (mode 0600; missing directories are
// created 0700) and reports created = true. Any other problem with the file
// is an error; it never replaces an existing file.
func LoadOrCreateKey(path string) (key wgtypes.Key, created bool, err error) {
	k, err := LoadKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return wgtypes.Key{}, false, err
	}
	k, err = wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, false, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	if err := createKeyFile(path, k); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Someone created it between our read and our write: use theirs.
			k, err := LoadKey(path)
			return k, false, err
		}
		return wgtypes.Key{}, false, err
	}
	return k, true, nil
}

// RotateKey generates a new private key and atomically replaces the key
// file with it (a reader sees the old key or the new one, also after a
// crash); it returns the new key.
func RotateKey(path string) (wgtypes.Key, error) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("generate WireGuard private key: %w", err)
	}
	if err := ensureKeyDir(path); err != nil {
		return wgtypes.Key{}, err
	}
	if err := atomicfile.Write(path, encodeKey(k), keyFileMode); err != nil {
		return wgtypes.Key{}, fmt.Errorf("write WireGuard key file: %w", err)
	}
	return k, nil
}

// LoadKey reads the private key in path. A missing file is an error
// wrapping fs.ErrNotExist; every other problem is an error that says what
// is wrong and what to do.
func LoadKey(path string) (wgtypes.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s: %w", path, err)
		}
		return wgtypes.Key{}, fmt.Errorf("open WireGuard key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("stat WireGuard key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s is not a regular file (%s): "+
			"remove it to have the agent create a new key", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s has mode %#o, so others than its owner can read it "+
			"and the key must be taken as exposed: `chmod 600 %s` and rotate the node's key "+
			"(trellisctl encryption rotate NODE), or delete the file to have the agent create a new key",
			path, perm, path)
	}
	if err := checkKeyDir(path); err != nil {
		return wgtypes.Key{}, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("read WireGuard key file: %w", err)
	}
	k, err := parseKey(data)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("WireGuard key file %s %w; restore it from a backup, or delete it to have "+
			"the agent create a new key (peers pick up the new public key from the node's annotation)", path, err)
	}
	return k, nil
}

// parseKey decodes the file's content; its errors complete the sentence
// "key file X ...".
func parseKey(data []byte) (wgtypes.Key, error) {
	if len(data) > maxKeyFileSize {
		return wgtypes.Key{}, fmt.Errorf("is larger than %d bytes: it is not a WireGuard key file", maxKeyFileSize)
	}
	s := bytes.TrimSpace(data)
	if len(s) == 0 {
		return wgtypes.Key{}, errors.New("is empty")
	}
	raw, err := base64.StdEncoding.DecodeString(string(s))
	if err != nil {
		return wgtypes.Key{}, errors.New("is corrupt: not one base64 line as `wg genkey` writes")
	}
	if len(raw) != wgtypes.KeyLen {
		return wgtypes.Key{}, fmt.Errorf("holds %d bytes, not the %d of a WireGuard key", len(raw), wgtypes.KeyLen)
	}
	k, err := wgtypes.NewKey(raw)
	if err != nil {
		return wgtypes.Key{}, fmt.Errorf("is corrupt: %w", err)
	}
	if k == (wgtypes.Key{}) {
		return wgtypes.Key{}, errors.New("holds the all-zero key")
	}
	return k, nil
}

func encodeKey(k wgtypes.Key) []byte {
	return []byte(k.String() + "\n")
}

// ensureKeyDir creates the key file's directory (0700) when missing.
func ensureKeyDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create WireGuard key directory: %w", err)
	}
	return nil
}

// checkKeyDir refuses a key file whose directory others may write to
// without the sticky bit: they could replace the key with their own.
func checkKeyDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("stat WireGuard key directory: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("WireGuard key file %s is in directory %s of mode %#o, which others than its owner can write to "+
			"(and so replace the key): `chmod go-w %s`", path, dir, perm, dir)
	}
	return nil
}

// createKeyFile writes k to path only if path does not exist yet (an error
// wrapping fs.ErrExist otherwise): the key is written and synced to a
// temporary file, which is then hard-linked to path (link never replaces a
// file) and removed, so path appears complete or not at all.
func createKeyFile(path string, k wgtypes.Key) (err error) {
	if err := ensureKeyDir(path); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	atomicfile.CleanTemp(dir, filepath.Base(path))
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("create WireGuard key file: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
	}()
	if err := tmp.Chmod(keyFileMode); err != nil {
		return fmt.Errorf("create WireGuard key file: %w", err)
	}
	if _, err := tmp.Write(encodeKey(k)); err != nil {
		return fmt.Errorf("write WireGuard key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fsync WireGuard key file: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return fmt.Errorf("create WireGuard key file: %w", err)
	}
	return atomicfile.SyncDir(dir)
}
