package artifact

import (
	"fmt"
	"regexp"
	"strings"
)

// DefaultTagPattern is the default value of the oci.tagPattern setting.
const DefaultTagPattern = "{{namespace}}.{{taskrun}}.{{artifact}}"

// maxTagLength is the OCI distribution spec's limit on tag length.
const maxTagLength = 128

var placeholder = regexp.MustCompile(`\{\{\s*([a-zA-Z]+)\s*\}\}`)

// TagVars are the values a tag pattern may use, by placeholder name:
// namespace, taskrun, pipelinerun, pod, artifact.
type TagVars map[string]string

// Tag renders pattern with vars and makes the result a valid OCI tag
// (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`): other characters become '-', a
// leading '.' or '-' gets a '_' before it, and a tag longer than 128
// characters is cut and ends with '-' and 12 hex characters of the full
// tag's sha256, so that distinct long tags stay distinct.
//
// A placeholder with no value (for example {{taskrun}} for a plain pod)
// falls back to {{pod}} when that is set. An unknown placeholder, or a
// pattern that renders to nothing, is an error.
func Tag(pattern string, vars TagVars) (string, error) {
	var err error
	out := placeholder.ReplaceAllStringFunc(pattern, func(m string) string {
		key := placeholder.FindStringSubmatch(m)[1]
		switch key {
		case "namespace", "taskrun", "pipelinerun", "pod", "artifact":
		default:
			err = fmt.Errorf("tag pattern %q: unknown placeholder {{%s}}", pattern, key)
			return ""
		}
		if v := vars[key]; v != "" {
			return v
		}
		if key == "taskrun" {
			return vars["pod"]
		}
		return ""
	})
	if err != nil {
		return "", err
	}
	return SanitizeTag(out)
}

// SanitizeTag maps s to a valid OCI tag as described on [Tag].
func SanitizeTag(s string) (string, error) {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	t := strings.Trim(string(b), ".-")
	if t == "" {
		return "", fmt.Errorf("tag %q has no valid characters", s)
	}
	if len(t) > maxTagLength {
		t = t[:maxTagLength-13] + "-" + shortHash(s, 12)
	}
	return t, nil
}
