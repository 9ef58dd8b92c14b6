package wireguard

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func TestLoadOrCreateKeyCreatesOnceWithTightPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "trellis")
	path := filepath.Join(dir, "wireguard.key")

	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateKey = created %v, err %v; want a new key", created, err)
	}
	if k1 == (wgtypes.Key{}) {
		t.Fatal("created the all-zero key")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("key directory mode %#o, want 0700", di.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(data), k1.String()+"\n"; got != want {
		t.Errorf("file holds %q, want the base64 key and a newline as wg genkey writes (%q)", got, want)
	}

	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreateKey = created %v, err %v; want the existing key", created, err)
	}
	if k2 != k1 {
		t.Error("second LoadOrCreateKey returned another key")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key file (no temporary files left)", len(entries))
	}
}

func TestLoadKeyReadsWgGenkeyOutput(t *testing.T) {
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "wireguard.key")
	// wg genkey's output, with the trailing newline and some whitespace an
	// editor might add.
	if err := os.WriteFile(path, []byte("  "+k.String()+"\r\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey = created %v, err %v", created, err)
	}
	if got != k {
		t.Error("loaded key differs from the file's")
	}
}

func TestLoadOrCreateKeyRefusesBadFiles(t *testing.T) {
	good, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		want    []string // substrings of the error
	}{
		{"empty", "", 0o600, []string{"is empty", "delete it"}},
		{"whitespace only", " \n\n", 0o600, []string{"is empty"}},
		{"not base64", "this is not a key!\n", 0o600, []string{"is corrupt", "wg genkey"}},
		{"two lines", good.String() + "\n" + good.String() + "\n", 0o600, []string{"is corrupt"}},
		{"short", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", 0o600, []string{"holds 30 bytes", "32"}},
		{"long", strings.Repeat("QUFB", 12) + "\n", 0o600, []string{"holds 36 bytes"}},
		{"all zero", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 0o600, []string{"all-zero"}},
		{"huge", strings.Repeat("A", 5000), 0o600, []string{"larger than"}},
		{"world readable", good.String() + "\n", 0o644, []string{"mode 0644", "chmod 600", "rotate"}},
		{"group readable", good.String() + "\n", 0o640, []string{"mode 0640", "exposed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wireguard.key")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(path)
			k, created, err := LoadOrCreateKey(path)
			if err == nil {
				t.Fatalf("LoadOrCreateKey accepted the file: key %v created %v", k.PublicKey(), created)
			}
			if created || k != (wgtypes.Key{}) {
				t.Errorf("returned created %v and a key alongside the error", created)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name the file", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			after, _ := os.ReadFile(path)
			if string(after) != string(before) {
				t.Error("the bad file was changed (a silent new key)")
			}
		})
	}
}

func TestLoadOrCreateKeyRefusesADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wireguard.key")
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreateKey(path)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("err = %v, want a 'not a regular file' error", err)
	}
}

func TestLoadKeyRefusesAWritableDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wireguard.key")
	if _, _, err := LoadOrCreateKey(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := LoadKey(path)
	if err == nil || !strings.Contains(err.Error(), "chmod go-w") {
		t.Fatalf("err = %v, want a refusal of the group/world-writable directory", err)
	}
	if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err != nil {
		t.Errorf("a sticky world-writable directory (like /tmp) is refused: %v", err)
	}
}

func TestLoadKeyMissingIsNotExist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wireguard.key")
	_, err := LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want fs.ErrNotExist naming the file", err)
	}
}

func TestRotateKeyReplacesAtomically(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trellis", "wireguard.key")
	k1, _, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := RotateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k2 == k1 || k2 == (wgtypes.Key{}) {
		t.Fatal("RotateKey returned the old key or the zero key")
	}
	got, created, err := LoadOrCreateKey(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKey after rotation = created %v, err %v", created, err)
	}
	if got != k2 {
		t.Error("the file does not hold the rotated key")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("rotated key file mode %#o, want 0600", fi.Mode().Perm())
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after rotation, want 1", len(entries))
	}
}

func TestRotateKeyRepairsAnUnreadableFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wireguard.key")
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	k, err := RotateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadKey(path)
	if err != nil || got != k {
		t.Fatalf("LoadKey after RotateKey = %v, %v; want the rotated key", got.PublicKey(), err)
	}
}

func TestCreateKeyFileNeverReplaces(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wireguard.key")
	k1, _ := wgtypes.GeneratePrivateKey()
	k2, _ := wgtypes.GeneratePrivateKey()
	if err := createKeyFile(path, k1); err != nil {
		t.Fatal(err)
	}
	err := createKeyFile(path, k2)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second createKeyFile err = %v, want fs.ErrExist", err)
	}
	got, err := LoadKey(path)
	if err != nil || got != k1 {
		t.Fatalf("file holds another key after a refused create (err %v)", err)
	}
}

func FuzzParseKey(f *testing.F) {
	k, _ := wgtypes.GeneratePrivateKey()
	f.Add([]byte(k.String() + "\n"))
	f.Add([]byte(""))
	f.Add([]byte("AAAA"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseKey(data)
		if err != nil {
			return
		}
		if got == (wgtypes.Key{}) {
			t.Fatal("parseKey accepted the zero key")
		}
		back, err := parseKey(encodeKey(got))
		if err != nil || back != got {
			t.Fatalf("a parsed key does not round-trip: %v", err)
		}
	})
}
