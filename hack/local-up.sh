#!/usr/bin/env bash
# A single-node Kubernetes cluster built from source, all on loopback, with
# the driver deployed from deploy/overlays/dev:
#
#   hack/local-up.sh up      (the default) start everything, build and push
#                            the images, deploy, wait until ready
#   hack/local-up.sh down    stop what an earlier run started (by PID),
#                            remove its containers and mounts
#   hack/local-up.sh env     print the exports to use the cluster (kubectl)
#   hack/local-up.sh images  build the images and push them to
#                            $IMAGE_REGISTRY (default 127.0.0.1:5000)
#
# Components: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# and kubelet built from the Go module proxy (hack/tools.sh --cluster);
# containerd, runc and the CNI plugins from Debian; the CNCF distribution
# registry on 127.0.0.1:5000 for images and artifacts; Tekton Pipelines
# (controller and webhook). Every component logs to $LOCAL_UP_DIR/logs.
# Re-running `up` first runs `down` and starts from an empty etcd.
#
# Tekton comes, by default, from the release copy in ../shared/tekton
# (TEKTON_DIR): its checksums are verified, its binaries become images as
# ko would build them (/ko-app/<name>) and its config/ is rendered with
# them. TEKTON_RELEASE=<URL or file of release.yaml> installs an official
# release instead (a machine with internet access). Either way
# hack/tekton/ adapts it to a cluster without kube-proxy.
#
# Environment: LOCAL_UP_DIR (default /tmp/artifacts-local-up), NODE_NAME
# (default artifacts-dev), TEKTON_DIR, TEKTON_RELEASE. Needs root (kubelet,
# containerd, bind mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${LOCAL_UP_DIR:-/tmp/artifacts-local-up}
NODE=${NODE_NAME:-artifacts-dev}
API=https://127.0.0.1:6443
# The Tekton Pipelines release the dev cluster and the e2e tests run on:
# the one place its version is pinned. The official release of it is
# https://infra.tekton.dev/tekton-releases/pipeline/previous/$TEKTON_VERSION/release.yaml
TEKTON_VERSION=v1.15.0
TEKTON_DIR=${TEKTON_DIR:-$ROOT/../shared/tekton}
REGISTRY=127.0.0.1:5000
LOGS=$WORK/logs PIDS=$WORK/pids PKI=$WORK/pki
CONTAINERD_SOCK=$WORK/containerd/containerd.sock
export KUBECONFIG=$WORK/admin.kubeconfig

log() { printf '%s local-up: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }

# start NAME CMD...: runs CMD in the background, logging to logs/NAME.log.
start() {
  local name=$1; shift
  "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

# wait_for WHAT SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "timed out after ${secs}s waiting for $what (logs in $LOGS)"
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

down() {
  [[ -d $PIDS ]] || return 0
  log "stopping an earlier run in $WORK"
  stop_pid kubelet
  # Containers outlive kubelet and containerd (their shims keep them):
  # kill and remove them while containerd still answers.
  if [[ -S $CONTAINERD_SOCK ]]; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$id" 2>/dev/null || true; done
    sleep 1
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks rm -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  for name in kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry; do stop_pid "$name"; done
  pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $CONTAINERD_SOCK" 2>/dev/null || true
  # What kubelet and the driver mounted, innermost first
  # (kubelet also bind-mounts its root directory on itself, to share it.)
  { grep -E " (/var/lib/kubelet/pods/|$WORK/|/var/lib/kubelet )" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  ip link delete cni0 2>/dev/null || true
  rm -rf "$PIDS"
}

stop_pid() {
  local f=$PIDS/$1.pid
  [[ -f $f ]] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

pki() {
  [[ -f $PKI/ca.crt ]] && return 0
  mkdir -p "$PKI"
  log "generating a CA, the API server's certificate and the service-account key"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=artifacts-local-up-ca \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' >san.ext
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # token,user,uid,"groups": static tokens for the components (loopback only).
    token() { # id user group
      local t; t=$(openssl rand -hex 16)
      echo "$t,$2,$1,\"$3\"" >>tokens.csv
      echo "$t" >"$1.token"
    }
    token admin admin system:masters
    token kubelet "system:node:$NODE" system:nodes
    # Without per-controller ServiceAccount tokens (the token controller is
    # off), the controller manager acts with its own identity for all.
    token controller-manager system:kube-controller-manager system:masters
    token scheduler system:kube-scheduler ""
  )
  for id in admin kubelet controller-manager scheduler; do
    kubeconfig "$WORK/$id.kubeconfig" "$(cat "$PKI/$id.token")"
  done
}

kubeconfig() { # file token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local-up
  cluster: {server: $API, certificate-authority: $PKI/ca.crt}
users:
- name: user
  user: {token: $2}
contexts:
- name: local-up
  context: {cluster: local-up, user: user}
current-context: local-up
EOF
  chmod 600 "$1"
}

containerd_config() {
  mkdir -p "$WORK/containerd" "$WORK/cni"
  cat >"$WORK/containerd/config.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$REGISTRY/pause:dev"
  # This machine lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$WORK/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
    endpoint = ["http://$REGISTRY"]
EOF
  cat >"$WORK/cni/10-bridge.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "local-up", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
EOF
}

kubelet_config() {
  cat >"$WORK/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: 127.0.0.1
readOnlyPort: 0
# Loopback only: the API server's calls (logs, exec) are not authenticated.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
# What this machine needs (cgroup v1, no systemd, no CAP_SYS_RESOURCE).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
failSwapOn: false
# A shared disk: never evict pods or images for its fill level.
evictionHard: {memory.available: "100Mi", nodefs.available: "0%", imagefs.available: "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
EOF
}

# images builds the driver's image, the sandbox image and a busybox with
# every applet (the tests' and Tekton's shell image), pushes them to
# $IMAGE_REGISTRY (default the dev registry) and prints the busybox's
# reference by digest.
images() {
  local to=${IMAGE_REGISTRY:-$REGISTRY}
  log "building and pushing images to $to"
  local bin=$WORK/bin
  mkdir -p "$bin"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=dev" -o "$bin/" ./cmd/... ./hack/pause ./hack/image
  local args=()
  for b in artifacts artifacts-csi-node artifacts-controller artifacts-provider-filesystem artifacts-provider-conformance; do args+=(--file "$bin/$b:/usr/local/bin/$b"); done
  # mke2fs formats the node plugin's output filesystems: the program, the
  # libraries it links and its configuration, from this machine.
  local mke2fs lib
  mke2fs=$(command -v mke2fs || echo /usr/sbin/mke2fs)
  args+=(--file "$mke2fs:/usr/sbin/mke2fs" --file /etc/mke2fs.conf:/etc/mke2fs.conf)
  for lib in $(ldd "$mke2fs" | awk '$2 == "=>" {print $3} $1 ~ /^\// {print $1}'); do
    args+=(--file "$(readlink -f "$lib"):$lib")
  done
  "$bin/image" --push "$to/tekton-artifacts:dev" "${args[@]}" --entrypoint /usr/local/bin/artifacts >/dev/null
  "$bin/image" --push "$to/pause:dev" --file "$bin/pause:/pause" --entrypoint /pause >/dev/null
  args=(--file /bin/busybox:/bin/busybox)
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] || args+=(--link "/bin/$applet:busybox")
  done
  "$bin/image" --push "$to/busybox:dev" "${args[@]}" --entrypoint /bin/sh
}

# tekton renders Tekton Pipelines into $WORK/tekton/release.yaml: the
# official release named by TEKTON_RELEASE, or the release copy in
# $TEKTON_DIR with its binaries, checked against its checksums, turned into
# images; $1 is the shell image for script steps.
tekton() {
  local out=$WORK/tekton shell=$1
  rm -rf "$out" && mkdir -p "$out/bin"
  if [[ -n ${TEKTON_RELEASE:-} ]]; then
    log "Tekton Pipelines from $TEKTON_RELEASE"
    case $TEKTON_RELEASE in
    http://* | https://*) curl -fsSL -o "$out/release.yaml" "$TEKTON_RELEASE" ;;
    *) cp "$TEKTON_RELEASE" "$out/release.yaml" ;;
    esac
    grep -q "app.kubernetes.io/version: \"$TEKTON_VERSION\"" "$out/release.yaml" ||
      log "warning: $TEKTON_RELEASE is not Tekton Pipelines $TEKTON_VERSION, which the tests were written for"
  else
    [[ -f $TEKTON_DIR/SHA256SUMS ]] || die "no Tekton release in $TEKTON_DIR (set TEKTON_DIR, or TEKTON_RELEASE on a machine with internet access)"
    grep -q "Tekton Pipelines $TEKTON_VERSION" "$TEKTON_DIR/README.md" || die "$TEKTON_DIR is not Tekton Pipelines $TEKTON_VERSION"
    log "Tekton Pipelines $TEKTON_VERSION from $TEKTON_DIR: verifying and building its images"
    (cd "$TEKTON_DIR/bin" && grep '\.zst$' ../SHA256SUMS | sha256sum --quiet -c -) || die "a compressed Tekton binary does not match SHA256SUMS"
    local names=() n
    for f in "$TEKTON_DIR"/bin/*.zst; do
      n=$(basename "$f" .zst)
      names+=("$n")
      zstd -q -d -f "$f" -o "$out/bin/$n"
    done
    (cd "$out/bin" && grep -v '\.zst$' "$TEKTON_DIR/SHA256SUMS" | sha256sum --quiet -c -) || die "a Tekton binary does not match SHA256SUMS"
    local subst=(-e "s|cgr.dev/chainguard/busybox@sha256:[0-9a-f]*|$shell|")
    for n in "${names[@]}"; do
      chmod +x "$out/bin/$n"
      local ref
      ref=$("$WORK/bin/image" --push "$REGISTRY/tektoncd/pipeline/$n:$TEKTON_VERSION" \
        --file "$out/bin/$n:/ko-app/$n" --entrypoint "/ko-app/$n")
      subst+=(-e "s|ko://github.com/tektoncd/pipeline/cmd/$n\b|$ref|g")
    done
    find "$TEKTON_DIR/config" -name '*.yaml' | sort | while read -r f; do
      cat "$f"
      printf '\n---\n' # files may lack a final newline
    done | sed "${subst[@]}" >"$out/release.yaml"
    ! grep -n 'ko://' "$out/release.yaml" || die "an image of the Tekton release was not built"
  fi
  cp hack/tekton/loopback.yaml "$out/"
  cp hack/tekton/kustomization.yaml.in "$out/kustomization.yaml"
}

up() {
  [[ $EUID -eq 0 ]] || die "run as root: kubelet, containerd and the driver mount"
  if ! command -v containerd runc openssl curl zstd >/dev/null || [[ ! -x /usr/lib/cni/bridge || ! -x /bin/busybox ]]; then
    log "installing containerd, runc, the CNI plugins, busybox and zstd from Debian"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      containerd runc containernetworking-plugins busybox-static openssl curl iproute2 zstd >/dev/null
  fi
  local tools; tools=$(hack/tools.sh --cluster)
  export PATH=$tools:$PATH
  down
  # A new cluster each time: objects an earlier run left (webhook
  # configurations whose webhook is not running yet, test namespaces)
  # would get in the way. Images in the registry stay.
  rm -rf "$WORK/etcd"
  mkdir -p "$LOGS" "$PIDS" "$WORK/etcd" "$WORK/registry"
  rm -f "$LOGS"/*.log
  grep -qE "^127\.0\.0\.1[[:space:]].*\b$NODE\b" /etc/hosts || echo "127.0.0.1 $NODE" >>/etc/hosts
  pki
  containerd_config
  kubelet_config

  cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry/data}, delete: {enabled: true}}
http: {addr: $REGISTRY}
EOF
  start registry "$tools/registry" serve "$WORK/registry/config.yml"
  start etcd "$tools/etcd" --data-dir "$WORK/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 --unsafe-no-fsync
  start containerd containerd --config "$WORK/containerd/config.toml"
  wait_for "the registry" 30 curl -sf "http://$REGISTRY/v2/"
  local busybox
  busybox=$(images)
  tekton "$busybox"
  # The dev images keep their tags: drop what containerd cached of an
  # earlier build, so that pods run this one.
  ctr_ images rm "$REGISTRY/tekton-artifacts:dev" "$REGISTRY/busybox:dev" >/dev/null 2>&1 || true

  start kube-apiserver "$tools/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=127.0.0.1 --secure-port=6443 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.0.0.0/24 --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --kubelet-preferred-address-types=Hostname --allow-privileged=true \
    --enable-aggregator-routing=true
  wait_for "kube-apiserver" 120 kubectl get --raw /readyz
  start kube-controller-manager "$tools/kube-controller-manager" --kubeconfig="$WORK/controller-manager.kubeconfig" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --controllers='*,-serviceaccount-token' --leader-elect=false --bind-address=127.0.0.1
  start kube-scheduler "$tools/kube-scheduler" --kubeconfig="$WORK/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1
  start kubelet "$tools/kubelet" --config="$WORK/kubelet.yaml" --kubeconfig="$WORK/kubelet.kubeconfig" \
    --hostname-override="$NODE"
  wait_for "node $NODE to be Ready" 180 kubectl wait --for=condition=Ready "node/$NODE" --timeout=1s

  log "deploying Tekton Pipelines and deploy/overlays/dev"
  # Server-side: Tekton's CRDs are too large for the last-applied annotation.
  kubectl apply --server-side --force-conflicts -k "$WORK/tekton" >/dev/null
  kubectl apply -k deploy/overlays/dev >/dev/null
  kubectl -n tekton-pipelines rollout status deploy/tekton-pipelines-controller --timeout=180s >&2
  kubectl -n tekton-pipelines rollout status deploy/tekton-pipelines-webhook --timeout=180s >&2
  # Admission goes through Tekton's webhook: ready once the API server
  # reaches it (through the Service's endpoints) with the caBundle it set.
  wait_for "Tekton's webhook to admit a Task" 120 sh -c 'kubectl create --dry-run=server -f - <<EOF
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: probe, namespace: default}
spec: {steps: [{name: s, image: busybox, script: "true"}]}
EOF'
  kubectl -n artifacts-csi rollout status ds/artifacts-csi-node --timeout=180s >&2
  kubectl -n artifacts-csi rollout status deploy/artifacts-controller --timeout=180s >&2
  kubectl -n artifacts-csi rollout status ds/artifacts-provider-filesystem --timeout=180s >&2
  # The controller publishes its signing keys at its first start; kubelet
  # puts them into the node plugin's (optional) volume at its next sync.
  wait_for "the node plugin to see the provenance signing keys" 180 sh -c \
    "test -s /var/lib/kubelet/pods/\$(kubectl -n artifacts-csi get pod -l app.kubernetes.io/name=artifacts-csi-node -o jsonpath='{.items[0].metadata.uid}')/volumes/kubernetes.io~configmap/signing-keys/trusted.pub"
  wait_for "the driver to register with kubelet" 60 \
    sh -c "kubectl get csinode $NODE -o jsonpath='{.spec.drivers[*].name}' | grep -q artifacts.csi.tekton.dev"
  log "ready: export KUBECONFIG=$KUBECONFIG (logs in $LOGS)"
}

case "${1:-up}" in
up) up ;;
down) down ;;
env) echo "export KUBECONFIG=$KUBECONFIG" ;;
images) images ;;
*) die "usage: $0 [up|down|env|images]" ;;
esac
