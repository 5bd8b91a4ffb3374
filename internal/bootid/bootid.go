// Package bootid tells which boot of the kernel this is, so that state
// written before an unclean reboot can be told from state written since.
package bootid

import (
	"os"
	"strings"
	"sync"
)

// Current returns the kernel's boot id, or "" where there is none. It is
// read once per process.
var Current = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})
