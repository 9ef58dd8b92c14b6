package nodesetup

import (
	"bytes"
	"fmt"
	"os"
)

func writeSysctl(file, value string) error {
	cur, err := os.ReadFile(file)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", file, value, err)
	}
	return nil
}
