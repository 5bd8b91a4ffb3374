#!/usr/bin/env bash
# Runs the example pipeline on the dev cluster (hack/local-up.sh) the way
# Tekton would, without Tekton: a PipelineRun and two TaskRuns of the test
# fixtures' CRDs, and their pods labelled as Tekton labels them. The build
# pod writes an output; the test pod, started after it, reads it with
# from: and writes a report. Prints the ArtifactRecords and the TaskRuns'
# status.artifacts as the controller recorded them.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-${LOCAL_UP_DIR:-/tmp/artifacts-local-up}/admin.kubeconfig}
PATH=$(hack/tools.sh --cluster):$PATH
NS=${NS:-example}
RUN=example-$(date +%s)
IMAGE=127.0.0.1:5000/busybox:dev

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create -f - >/dev/null <<PIPELINERUN
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: $RUN}
spec: {pipelineRef: {name: build-and-test}}
PIPELINERUN
run_uid=$(kubectl -n "$NS" get pipelinerun "$RUN" -o jsonpath='{.metadata.uid}')

# task NAME SCRIPT VOLUMES MOUNTS: creates a TaskRun and its pod (volumes
# and mounts as YAML flow lists), and waits for the pod to succeed.
task() {
  local name=$1 script=$2 volumes=$3 mounts=$4 tr=$RUN-$1
  kubectl -n "$NS" create -f - >/dev/null <<TASKRUN
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: $tr
  labels: {tekton.dev/pipelineRun: $RUN, tekton.dev/pipelineTask: $name}
spec: {taskRef: {name: $name}}
TASKRUN
  local tr_uid
  tr_uid=$(kubectl -n "$NS" get taskrun "$tr" -o jsonpath='{.metadata.uid}')
  kubectl -n "$NS" create -f - >/dev/null <<POD
apiVersion: v1
kind: Pod
metadata:
  name: $tr-pod
  labels:
    tekton.dev/taskRun: $tr
    tekton.dev/taskRunUID: $tr_uid
    tekton.dev/pipelineRun: $RUN
    tekton.dev/pipelineRunUID: $run_uid
    tekton.dev/pipelineTask: $name
spec:
  restartPolicy: Never
  containers:
  - name: step
    image: $IMAGE
    command: [sh, -c, '$script']
    volumeMounts: $mounts
  volumes: $volumes
POD
  kubectl -n "$NS" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$tr-pod" --timeout=180s >/dev/null
  echo "--- $tr-pod printed:"
  kubectl -n "$NS" logs "$tr-pod"
}

task build 'echo hello from the build task > /artifacts/outputs/bin/hello.txt && mkdir /artifacts/outputs/bin/docs && echo built > /artifacts/outputs/bin/docs/README' \
  '[{name: bin, csi: {driver: artifacts.csi.tekton.dev, volumeAttributes: {direction: output, artifact: bin, buildOutput: "true"}}}]' \
  '[{name: bin, mountPath: /artifacts/outputs/bin}]'
task test 'cat /artifacts/inputs/bin/hello.txt && sha256sum /artifacts/inputs/bin/hello.txt > /artifacts/outputs/report/checksums.txt' \
  '[{name: bin, csi: {driver: artifacts.csi.tekton.dev, readOnly: true, volumeAttributes: {direction: input, artifact: bin, from: tasks.build.outputs.bin}}},
    {name: report, csi: {driver: artifacts.csi.tekton.dev, volumeAttributes: {direction: output, artifact: report}}}]' \
  '[{name: bin, mountPath: /artifacts/inputs/bin}, {name: report, mountPath: /artifacts/outputs/report}]'

# The report is pushed once kubelet unmounts the finished pod's volume.
for _ in $(seq 120); do
  [[ $(kubectl -n "$NS" get taskrun "$RUN-test" -o jsonpath='{.status.artifacts.outputs[*].name}') == *report* ]] && break
  sleep 1
done
echo "--- kubectl -n $NS get artifactrecords --field-selector spec.pipelineRun=$RUN"
kubectl -n "$NS" get artifactrecords --field-selector "spec.pipelineRun=$RUN"
for t in build test; do
  echo "--- TaskRun $RUN-$t status.artifacts"
  kubectl -n "$NS" get taskrun "$RUN-$t" -o jsonpath='{.status.artifacts}' | python3 -m json.tool
done
