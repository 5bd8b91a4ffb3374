package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/tektoncd/artifacts-csi-driver/pkg/credentials"
	"github.com/tektoncd/artifacts-csi-driver/pkg/outputs"
)

// The admin socket, <state dir>/admin.sock (root only), lets an
// administrator on the node (kubectl exec into the plugin's pod) list the
// outputs waiting or failed there and retry a failed one:
//
//	artifacts-csi-node outputs list [-o json]
//	artifacts-csi-node outputs retry VOLUME_ID [--docker-config FILE]
const adminSocket = "admin.sock"

// maxAdminBody bounds a retry's credentials.
const maxAdminBody = 1 << 20

// outputAdmin is what the admin socket serves.
type outputAdmin interface {
	List() []outputs.Volume
	Retry(ctx context.Context, id string, creds credentials.Snapshot) error
}

func adminHandler(m outputAdmin) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/outputs", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(m.List())
	})
	mux.HandleFunc("POST /v1/outputs/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		var creds credentials.Snapshot
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if len(body) > 0 {
			if !json.Valid(body) {
				http.Error(w, "the credentials must be a Docker config file (JSON)", http.StatusBadRequest)
				return
			}
			creds.Secrets = []credentials.Secret{{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: body}}}
		}
		err = m.Retry(r.Context(), r.PathValue("id"), creds)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusConflict)
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return mux
}

// OutputsCommand runs `artifacts-csi-node outputs ...` with args (what
// follows "outputs") against the plugin running on this node, and returns
// the exit code.
func OutputsCommand(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("artifacts-csi-node outputs", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", NewOptions().StateDir, "the node plugin's state directory")
	format := fs.StringP("output", "o", "table", "list format: table or json")
	dockerConfig := fs.String("docker-config", "", "retry: push with the credentials of this Docker config file (default: none, anonymous)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: artifacts-csi-node outputs list [-o json] | retry VOLUME_ID [--docker-config FILE]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(*stateDir, adminSocket))
		},
	}}
	var err error
	switch a := fs.Args(); {
	case len(a) == 1 && a[0] == "list":
		err = listOutputs(c, *format, stdout)
	case len(a) == 2 && a[0] == "retry":
		err = retryOutput(c, a[1], *dockerConfig)
		if err == nil {
			fmt.Fprintf(stdout, "output %s is sealed again for upload\n", a[1])
		}
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "artifacts-csi-node outputs:", err)
		return 1
	}
	return 0
}

func listOutputs(c *http.Client, format string, stdout io.Writer) error {
	resp, err := c.Get("http://plugin/v1/outputs")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := adminStatus(resp); err != nil {
		return err
	}
	var vs []outputs.Volume
	if err := json.NewDecoder(resp.Body).Decode(&vs); err != nil {
		return err
	}
	if format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(vs)
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VOLUME\tSTATE\tARTIFACT\tPOD\tSEALED\tERROR")
	for _, v := range vs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s/%s\t%s\t%s\n", v.ID, v.State, v.Metadata.Name, v.Pod.Namespace, v.Pod.Name,
			v.SealedAt.Format(time.RFC3339), v.LastError)
	}
	return w.Flush()
}

func retryOutput(c *http.Client, id, dockerConfig string) error {
	var body io.Reader = http.NoBody
	if dockerConfig != "" {
		b, err := os.ReadFile(dockerConfig)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	resp, err := c.Post("http://plugin/v1/outputs/"+id+"/retry", "application/json", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return adminStatus(resp)
}

func adminStatus(resp *http.Response) error {
	if resp.StatusCode < 300 {
		return nil
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
}
