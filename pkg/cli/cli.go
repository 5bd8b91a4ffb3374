// Package cli implements the artifacts command: push, pull and inspect
// Tekton artifacts in an OCI registry from a laptop or a script, in the same
// format the CSI driver uses.
//
// Contract relied on by scripts: `push` prints REPO@sha256:<manifest digest>
// as the last line of stdout; every failure exits non-zero with one line on
// stderr naming the cause; progress goes to stderr, only when it is a
// terminal.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tektoncd/artifacts-csi-driver/pkg/archive"
	"github.com/tektoncd/artifacts-csi-driver/pkg/artifact"
	"github.com/tektoncd/artifacts-csi-driver/pkg/attest"
	"github.com/tektoncd/artifacts-csi-driver/pkg/digestcache"
	"github.com/tektoncd/artifacts-csi-driver/pkg/oci"
	"github.com/tektoncd/artifacts-csi-driver/pkg/provenance"
	"github.com/tektoncd/artifacts-csi-driver/pkg/signing"
)

// globals are the flags every subcommand takes.
type globals struct {
	plainHTTP bool
	noCache   bool
	limits    archive.Limits
	stdout    io.Writer
	stderr    *os.File
}

// NewCommand returns the root command. stdout receives results; stderr
// receives progress (when it is a terminal) and summaries.
func NewCommand(version string, stdout io.Writer, stderr *os.File) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "artifacts",
		Version:       version,
		Short:         "Push, pull and inspect Tekton artifacts in OCI registries",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVar(&g.plainHTTP, "plain-http", false,
		"talk plain HTTP to the registry (default: HTTPS, except localhost and private addresses)")
	root.PersistentFlags().BoolVar(&g.noCache, "no-cache", false,
		"do not use or update the local digest cache that lets an unchanged tree be re-pushed without compressing it")
	root.AddCommand(g.pushCommand(), g.pullCommand(), g.inspectCommand(), g.verifyCommand())
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root
}

// Main runs the command with args and returns the process exit code.
func Main(ctx context.Context, version string, args []string) int {
	cmd := NewCommand(version, os.Stdout, os.Stderr)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "artifacts: %s\n", oneLine(err))
		return 1
	}
	return 0
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func (g *globals) client(verb string) (*oci.Client, func()) {
	o := oci.Options{Limits: g.limits}
	if !g.noCache {
		if dir := digestcache.DefaultDir(); dir != "" {
			if c, err := digestcache.Open(dir); err == nil {
				o.DigestCache = c
			}
		}
	}
	done := func() {}
	if term.IsTerminal(int(g.stderr.Fd())) {
		p := &progress{w: g.stderr, verb: verb, start: time.Now()}
		o.Progress, done = p.update, p.finish
	}
	return oci.New(o), done
}

func (g *globals) pushCommand() *cobra.Command {
	var (
		meta        artifact.Metadata
		compression string
		format      string
		mediaType   string
		group       artifact.Group
	)
	cmd := &cobra.Command{
		Use:   "push DIR REPO[:TAG]",
		Short: "Archive DIR reproducibly and push it as an artifact",
		Long: `Archive DIR reproducibly and push it as an artifact.

The last line of standard output is REPO@sha256:<manifest digest>. Pushing
the same tree again gives the same digest and, thanks to a local digest
cache, compresses and uploads nothing.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := args[0]
			if st, err := os.Stat(dir); err != nil {
				return err
			} else if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			repo, tag, err := oci.ParseRepositoryTag(args[1], oci.SchemeOf(g.plainHTTP))
			if err != nil {
				return err
			}
			comp, err := archive.ParseCompression(compression)
			if err != nil {
				return err
			}
			if meta.Name == "" {
				abs, _ := filepath.Abs(dir)
				meta.Name = filepath.Base(abs)
			}
			if format != "archive" && format != oci.FormatChunked {
				return fmt.Errorf("unknown format %q (want archive or %s)", format, oci.FormatChunked)
			}
			req := oci.PushRequest{Dir: dir, Repository: repo, Tag: tag, Metadata: meta, Compression: comp, Format: format, MediaType: mediaType}
			if group.PipelineRun != "" {
				group.Namespace = meta.Namespace
				req.Group = &group
			}
			c, done := g.client("pushed")
			res, err := c.Push(cmd.Context(), req)
			done()
			if err != nil {
				return err
			}
			how := "uploaded"
			if res.Reused {
				how = "already in the registry"
			}
			fmt.Fprintf(g.stderr, "%d entries, %s archived; layer %s (%s, %s)\n",
				res.Stats.Entries, humanBytes(res.Stats.Bytes), res.Layer.Digest, humanBytes(res.Layer.Size), how)
			fmt.Fprintln(g.stdout, res.Ref.Name())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&meta.Name, "name", "", "artifact name (default: the base name of DIR)")
	f.StringVar(&compression, "compression", "gzip", "archive compression: gzip, zstd or none (chunked: zstd unless none)")
	f.StringVar(&format, "format", "archive", "layout of a directory: archive (one tar layer) or chunked (content-defined chunks in packs; a new version uploads only what changed)")
	f.StringVar(&mediaType, "media-type", "", "push the single regular file in DIR as-is with this media type, instead of an archive")
	f.BoolVar(&meta.BuildOutput, "build-output", false, "mark the artifact as a build output (for Tekton Chains)")
	f.StringVar(&meta.Namespace, "namespace", "", "namespace recorded in the artifact")
	f.StringVar(&meta.TaskRun, "taskrun", "", "TaskRun recorded in the artifact")
	f.StringVar(&meta.PipelineRun, "pipelinerun", "", "PipelineRun recorded in the artifact; with --pipelinerun-uid, the artifact joins the run's group")
	f.StringVar(&group.UID, "pipelinerun-uid", "", "UID of the PipelineRun whose group (referrers subject) the artifact joins")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if group.UID != "" {
			if meta.PipelineRun == "" {
				return fmt.Errorf("--pipelinerun-uid needs --pipelinerun")
			}
			group.PipelineRun = meta.PipelineRun
		}
		return nil
	}
	return cmd
}

func (g *globals) pullCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pull REF DIR",
		Short: "Fetch, verify and extract an artifact into DIR",
		Long: `Fetch, verify and extract an artifact into DIR, which must be absent or empty.

REF is REPO@sha256:<manifest digest>, REPO:TAG, or oci:REPO@sha256:<blob digest>
(a Konflux trusted artifact). Every digest is verified before anything appears
in DIR. Standard output receives the resolved reference.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := oci.ParseReference(args[0], oci.SchemeOf(g.plainHTTP))
			if err != nil {
				return err
			}
			c, done := g.client("pulled")
			res, err := c.Pull(cmd.Context(), ref, args[1])
			done()
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "%d entries, %s extracted into %s\n", res.Stats.Entries, humanBytes(res.Stats.Bytes), args[1])
			fmt.Fprintln(g.stdout, res.Ref)
			return nil
		},
	}
	cmd.Flags().Int64Var(&g.limits.MaxBytes, "max-bytes", archive.DefaultMaxBytes, "refuse an artifact whose disk footprint is larger than this (file content in 4 KiB blocks, plus 4 KiB per directory)")
	cmd.Flags().Int64Var(&g.limits.MaxEntries, "max-entries", archive.DefaultMaxEntries, "refuse an archive with more entries, or inodes, than this")
	return cmd
}

func (g *globals) inspectCommand() *cobra.Command {
	var output, keyFile string
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Describe an artifact and list its provenance without downloading its content",
		Long: "Describe the artifact REF names without downloading its content, and list the provenance\n" +
			"attached to it as OCI referrers (Sigstore bundles): their digest, predicate type, creation\n" +
			"time and the hint of the key they say signed them. Nothing is verified unless\n" +
			"--key FILE is given; `artifacts verify REF --key FILE` verifies and prints the provenance.\n" +
			"When the referrers cannot be listed, a warning goes to stderr and the JSON provenance is null.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q (want text or json)", output)
			}
			var keys signing.Keys
			if keyFile != "" {
				pem, err := os.ReadFile(keyFile)
				if err != nil {
					return err
				}
				if keys, err = signing.ParseKeys(pem); err != nil {
					return fmt.Errorf("--key %s: %w", keyFile, err)
				}
			}
			ref, err := oci.ParseReference(args[0], oci.SchemeOf(g.plainHTTP))
			if err != nil {
				return err
			}
			c, _ := g.client("")
			d, err := c.Inspect(cmd.Context(), ref)
			if err != nil {
				return err
			}
			var prov []provenanceEntry // nil: not listed (a blob has no referrers)
			if ref.Kind != oci.KindBlob {
				if prov, err = listProvenance(cmd.Context(), c, ref.Repository(), d.Digest, keys); err != nil {
					fmt.Fprintf(g.stderr, "artifacts: warning: %s\n", oneLine(err))
				}
			}
			if output == "json" {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(inspectOutput{Description: d, Provenance: prov})
			}
			if err := printDescription(g.stdout, d); err != nil || prov == nil {
				return err
			}
			return printProvenance(g.stdout, prov)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM file of trusted public keys: mark each provenance verified or not")
	return cmd
}

// inspectOutput is inspect's JSON document: the description, and the
// provenance attached, null when it was not listed.
type inspectOutput struct {
	*oci.Description
	Provenance []provenanceEntry `json:"provenance"`
}

// provenanceEntry is a provenance bundle attached to an artifact, as its
// referrer manifest and the bundle say. Verified is set only with --key;
// Error says why the bundle could not be read, or did not verify.
type provenanceEntry struct {
	Digest        string `json:"digest"`
	PredicateType string `json:"predicateType,omitempty"`
	Created       string `json:"created,omitempty"`
	KeyHint       string `json:"keyHint,omitempty"`
	Verified      *bool  `json:"verified,omitempty"`
	Error         string `json:"error,omitempty"`
}

// listProvenance lists the Sigstore bundles attached to the manifest
// digest in repo, checking each against keys when there are any. The
// slice is non-nil, empty when none is attached; the error is the
// listing's only.
func listProvenance(ctx context.Context, c *oci.Client, repo name.Repository, digest string, keys signing.Keys) ([]provenanceEntry, error) {
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil, fmt.Errorf("list provenance: %w", err)
	}
	bundles, err := attest.Bundles(ctx, c, repo, h)
	if err != nil {
		return nil, fmt.Errorf("list provenance: %w", err)
	}
	out := []provenanceEntry{}
	for _, b := range bundles {
		e := provenanceEntry{Digest: b.Digest.String(), PredicateType: b.Annotations[attest.AnnotationPredicateType],
			Created: b.Annotations[attest.AnnotationCreated]}
		err := b.Err
		if err == nil {
			e.KeyHint, err = keyHint(b.Content)
		}
		if keys != nil {
			verified := false
			if err == nil {
				_, _, err = signing.Verify(b.Content, keys, digest)
				verified = err == nil
			}
			e.Verified = &verified
		}
		if err != nil {
			e.Error = oneLine(err)
		}
		out = append(out, e)
	}
	return out, nil
}

// keyHint returns the hint of the key a Sigstore bundle says signed it:
// its public key hint, else its DSSE signature's keyid. It verifies
// nothing.
func keyHint(b []byte) (string, error) {
	var pb protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &pb); err != nil {
		return "", fmt.Errorf("not a Sigstore bundle: %w", err)
	}
	if h := pb.GetVerificationMaterial().GetPublicKey().GetHint(); h != "" {
		return h, nil
	}
	for _, s := range pb.GetDsseEnvelope().GetSignatures() {
		if s.GetKeyid() != "" {
			return s.GetKeyid(), nil
		}
	}
	return "", nil
}

func printProvenance(w io.Writer, prov []provenanceEntry) error {
	if len(prov) == 0 {
		_, err := fmt.Fprintln(w, "Provenance: none")
		return err
	}
	fmt.Fprintln(w, "Provenance:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "    %s:\t%s\n", k, v)
		}
	}
	for _, p := range prov {
		fmt.Fprintf(tw, "  %s\n", p.Digest)
		row("Predicate type", p.PredicateType)
		row("Created", p.Created)
		row("Key hint", p.KeyHint)
		switch {
		case p.Verified == nil:
			row("Signature", "not verified (pass --key FILE to check it)")
		case *p.Verified:
			row("Signature", "verified (signed by a key in --key, about this digest)")
		default:
			row("Signature", "NOT verified")
		}
		row("Error", p.Error)
	}
	return tw.Flush()
}

func (g *globals) verifyCommand() *cobra.Command {
	var keyFile, output string
	cmd := &cobra.Command{
		Use:   "verify REF --key FILE",
		Short: "Check that an artifact has a provenance signed by a trusted key, as the node plugin does before it mounts one",
		Long: "Check that the artifact REF names (by digest, or a tag resolved to one) has a SLSA provenance attached,\n" +
			"signed by one of the PEM public keys in FILE (the driver's published keys: the ConfigMap\n" +
			"artifacts-signing-keys, trusted.pub), whose subject is that digest. Prints what it states.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("unknown output format %q (want text or json)", output)
			}
			pem, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			keys, err := signing.ParseKeys(pem)
			if err != nil {
				return fmt.Errorf("--key %s: %w", keyFile, err)
			}
			ref, err := oci.ParseReference(args[0], oci.SchemeOf(g.plainHTTP))
			if err != nil {
				return err
			}
			c, _ := g.client("")
			d, err := c.Resolve(cmd.Context(), ref)
			if err != nil {
				return err
			}
			digest, err := v1.NewHash(d.DigestStr())
			if err != nil {
				return err
			}
			v, err := attest.Verify(cmd.Context(), c, ref.Repository(), digest, keys)
			if err != nil {
				return err
			}
			if output == "json" {
				b, err := provenance.Marshal(v.Statement)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(g.stdout, string(b))
				return err
			}
			fmt.Fprintf(g.stdout, "Verified:    %s\nKey:         %s\nProvenance:  %s\n", d, v.KeyHint, ref.Repository().Digest(v.Bundle.String()))
			if p, err := provenance.Predicate(v.Statement); err == nil {
				fmt.Fprintf(g.stdout, "Build type:  %s\nInvocation:  %s\n", p.GetBuildDefinition().GetBuildType(), p.GetRunDetails().GetMetadata().GetInvocationId())
				for _, dep := range p.GetBuildDefinition().GetResolvedDependencies() {
					fmt.Fprintf(g.stdout, "Input:       %s %s\n", dep.GetName(), dep.GetUri())
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM file of the trusted public keys (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, or json (the verified statement)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func printDescription(w io.Writer, d *oci.Description) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Reference", d.Reference)
	row("Digest", d.Digest)
	row("Media type", d.MediaType)
	row("Artifact type", d.ArtifactType)
	row("Size", humanBytes(d.Size))
	if a := d.Artifact; a != nil {
		row("Name", a.Name)
		row("Namespace", a.Namespace)
		row("TaskRun", a.TaskRun)
		row("PipelineRun", a.PipelineRun)
		row("Build output", fmt.Sprint(a.BuildOutput))
	}
	if d.Subject != nil {
		row("Subject", d.Subject.Digest.String())
	}
	for i, l := range d.Layers {
		title := l.Annotations[artifact.AnnotationTitle]
		row(fmt.Sprintf("Layer %d", i), fmt.Sprintf("%s %s %s %s", l.Digest, humanBytes(l.Size), l.MediaType, title))
	}
	return tw.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progress prints a transfer line on a terminal at most every 200 ms.
type progress struct {
	w     io.Writer
	verb  string
	start time.Time
	last  time.Time
	n     int64
}

func (p *progress) update(n int64) {
	p.n = n
	if now := time.Now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.print("\r")
	}
}

func (p *progress) print(prefix string) {
	secs := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "%s%s %s (%s/s)\033[K", prefix, p.verb, humanBytes(p.n), humanBytes(int64(float64(p.n)/max(secs, 0.001))))
}

func (p *progress) finish() {
	if !p.last.IsZero() {
		p.print("\r")
		fmt.Fprintln(p.w)
	}
}
