package injector

import (
	"strconv"
	"strings"
)

// NativeSidecarsSupported reports whether a Kubernetes version (a git
// version such as "v1.29.3" or "v1.31.2-gke.1200", or "1.30") runs native
// sidecars: init containers with restartPolicy Always, on by default since
// 1.29. An unreadable version is reported as unsupported.
func NativeSidecarsSupported(version string) bool {
	v := strings.TrimPrefix(strings.TrimSpace(version), "v")
	majorS, rest, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	minorS := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minorS = rest[:i]
	}
	major, err1 := strconv.Atoi(majorS)
	minor, err2 := strconv.Atoi(minorS)
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 1 || (major == 1 && minor >= 29)
}
