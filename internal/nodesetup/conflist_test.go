package nodesetup

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestChooseConflist(t *testing.T) {
	own, err := RenderConflist(ConflistParams{CNIVersion: "1.0.0", MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	foreign := []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bridge"}]}`)
	for _, tc := range []struct {
		name    string
		files   map[string][]byte
		want    ConflistChoice
		wantErr error
	}{
		{name: "empty dir", want: ConflistChoice{Name: ConflistName}},
		{name: "own file only", files: map[string][]byte{ConflistName: own}, want: ConflistChoice{Name: ConflistName}},
		{name: "foreign sorts after", files: map[string][]byte{"87-podman.conflist": foreign, "notes.txt": foreign},
			want: ConflistChoice{Name: ConflistName, Foreign: []string{"87-podman.conflist"}}},
		{name: "foreign sorts before: take 05-",
			files: map[string][]byte{"10-calico.conflist": foreign, ConflistName: own},
			want:  ConflistChoice{Name: "05-trellis.conflist", Foreign: []string{"10-calico.conflist"}, Stale: []string{ConflistName}}},
		{name: "foreign at 01: take 00-", files: map[string][]byte{"01-flannel.conf": foreign},
			want: ConflistChoice{Name: "00-trellis.conflist", Foreign: []string{"01-flannel.conf"}}},
		{name: "a foreign file under our name is foreign", files: map[string][]byte{ConflistName: foreign},
			want: ConflistChoice{Name: "05-trellis.conflist", Foreign: []string{ConflistName}}},
		{name: "nothing sorts first", files: map[string][]byte{"00-aaa.conflist": foreign},
			want: ConflistChoice{Foreign: []string{"00-aaa.conflist"}}, wantErr: ErrForeignConfigFirst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, d := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, n), d, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ChooseConflist(dir)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ChooseConflist = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestIsOwnConflist(t *testing.T) {
	own, _ := RenderConflist(ConflistParams{CNIVersion: "1.0.0"})
	if !IsOwnConflist(own) {
		t.Error("the agent's conflist is not recognised")
	}
	for _, d := range []string{`{"plugins":[{"type":"bridge"}]}`, `not json`, `{"type":"trellis-cni"}`} {
		if IsOwnConflist([]byte(d)) {
			t.Errorf("%s recognised as Trellis's", d)
		}
	}
}
