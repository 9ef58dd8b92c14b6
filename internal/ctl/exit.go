package ctl

import (
	"errors"
	"fmt"
	"strings"
)

// Exit codes trellisctl returns; scripts may rely on them.
const (
	// ExitOK: the command did what was asked and every check passed.
	ExitOK = 0
	// ExitFailed: the command ran, and what it checked is not healthy (a
	// node unhealthy, a scenario failed, a connection denied).
	ExitFailed = 1
	// ExitUsage: bad input (unknown flag, pod, namespace or context), or a
	// cluster without Trellis where the command needs it.
	ExitUsage = 2
	// ExitError: the command could not finish (API server unreachable,
	// timeout, an unexpected error).
	ExitError = 3
)

// ExitCodeError is an error with the exit code trellisctl returns for it.
type ExitCodeError struct {
	Code int
	Err  error
}

func (e *ExitCodeError) Error() string { return e.Err.Error() }
func (e *ExitCodeError) Unwrap() error { return e.Err }

// Usage marks err as bad input (exit 2).
func Usage(format string, a ...any) error {
	return &ExitCodeError{Code: ExitUsage, Err: fmt.Errorf(format, a...)}
}

// Failed marks err as a failed check (exit 1).
func Failed(format string, a ...any) error {
	return &ExitCodeError{Code: ExitFailed, Err: fmt.Errorf(format, a...)}
}

// ExitCode is the process exit code for err: the code an ExitCodeError
// carries, ExitError for any other error, ExitOK for nil.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *ExitCodeError
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitError
}

// isUsageError recognises cobra's own errors for a bad command line (an
// unknown command, a wrong number of arguments), which it returns unwrapped.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command ", "accepts ", "requires at least ", "requires at most ", "received ", "invalid argument "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
