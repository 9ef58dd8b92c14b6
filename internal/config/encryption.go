package config

import "fmt"

// Encryption selects how pod traffic between nodes is protected.
type Encryption string

// Encryption modes.
const (
	// EncryptionNone sends pod traffic between nodes as the routing mode
	// carries it (plaintext on the underlay).
	EncryptionNone Encryption = "none"
	// EncryptionWireGuard carries every pod packet that crosses nodes
	// through the agent's WireGuard device (docs/encryption.md).
	EncryptionWireGuard Encryption = "wireguard"
)

// WireGuardEngine selects the implementation behind the WireGuard device.
type WireGuardEngine string

// WireGuard engines.
const (
	// EngineAuto uses the kernel module when the kernel has it, the
	// embedded wireguard-go otherwise.
	EngineAuto WireGuardEngine = "auto"
	// EngineKernel requires the kernel module (an error without it).
	EngineKernel WireGuardEngine = "kernel"
	// EngineUserspace runs wireguard-go inside the agent on a TUN device.
	EngineUserspace WireGuardEngine = "userspace"
)

// WireGuard defaults.
const (
	DefaultWireGuardDevice = "trellis.wg"
	// DefaultWireGuardPort is the UDP port every node listens on; not
	// 51820 (wg-quick's default), so a node's own tunnel keeps its port.
	DefaultWireGuardPort   = 51871
	DefaultWireGuardEngine = EngineAuto
	// DefaultWireGuardKeyFile holds the node's private key (mode 0600),
	// beside the node state file.
	DefaultWireGuardKeyFile = "/var/lib/trellis/wireguard.key"
)

// WireGuard configures the WireGuard device (encryption: wireguard).
type WireGuard struct {
	// Device is the interface name (at most 15 characters).
	Device string `json:"device,omitempty"`
	// Port is the UDP port peers send to.
	Port int `json:"port,omitempty"`
	// Engine is auto, kernel or userspace.
	Engine WireGuardEngine `json:"engine,omitempty"`
	// KeyFile is the node's private key; created once, mode 0600.
	KeyFile string `json:"keyFile,omitempty"`
}

// EncryptionEnabled reports whether pod traffic between nodes is encrypted.
func (c *Config) EncryptionEnabled() bool { return c.Encryption == EncryptionWireGuard }

// EncryptionStrictEnabled reports whether strict mode is on: encryption on
// and encryptionStrict not set to false.
func (c *Config) EncryptionStrictEnabled() bool {
	return c.EncryptionEnabled() && (c.EncryptionStrict == nil || *c.EncryptionStrict)
}

func (c *Config) applyEncryptionDefaults() {
	if c.Encryption == "" {
		c.Encryption = EncryptionNone
	}
	if c.WireGuard.Device == "" {
		c.WireGuard.Device = DefaultWireGuardDevice
	}
	if c.WireGuard.Port == 0 {
		c.WireGuard.Port = DefaultWireGuardPort
	}
	if c.WireGuard.Engine == "" {
		c.WireGuard.Engine = DefaultWireGuardEngine
	}
	if c.WireGuard.KeyFile == "" {
		c.WireGuard.KeyFile = DefaultWireGuardKeyFile
	}
}

func (c *Config) validateEncryption() []error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.Encryption {
	case EncryptionNone, EncryptionWireGuard:
	default:
		add("encryption: %q is not one of none, wireguard", c.Encryption)
	}
	if c.EncryptionStrict != nil && *c.EncryptionStrict && !c.EncryptionEnabled() {
		add("encryptionStrict: true needs encryption: wireguard")
	}
	if n := len(c.WireGuard.Device); n == 0 || n > 15 {
		add("wireguard.device: %q must be 1..15 characters", c.WireGuard.Device)
	}
	if c.WireGuard.Device == c.VXLAN.Device {
		add("wireguard.device: %q is also the VXLAN device's name", c.WireGuard.Device)
	}
	if c.WireGuard.Port < 1 || c.WireGuard.Port > 65535 {
		add("wireguard.port: %d is outside 1..65535", c.WireGuard.Port)
	}
	if c.EncryptionEnabled() && c.WireGuard.Port == c.VXLAN.Port {
		add("wireguard.port: %d is also the VXLAN port", c.WireGuard.Port)
	}
	switch c.WireGuard.Engine {
	case EngineAuto, EngineKernel, EngineUserspace:
	default:
		add("wireguard.engine: %q is not one of auto, kernel, userspace", c.WireGuard.Engine)
	}
	if c.WireGuard.KeyFile == "" || c.WireGuard.KeyFile[0] != '/' {
		add("wireguard.keyFile: %q must be an absolute path", c.WireGuard.KeyFile)
	}
	return errs
}
