#!/usr/bin/env bash
# Runs the example pipeline of examples/ on the dev cluster
# (hack/local-up.sh), as a user would on theirs: applies the examples
# (through hack/example/, which points them at the dev registry), creates
# examples/pipelinerun.yaml, lets Tekton run it, and prints the
# PipelineRun, its ArtifactRecords and both TaskRuns' status.artifacts.
#
# Environment: NS (default example), KUBECONFIG (default the dev
# cluster's), TIMEOUT in seconds for the PipelineRun (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=${KUBECONFIG:-${LOCAL_UP_DIR:-/tmp/artifacts-local-up}/admin.kubeconfig}
PATH=$(hack/tools.sh --cluster):$PATH
NS=${NS:-example}
TIMEOUT=${TIMEOUT:-300}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" apply -k hack/example >/dev/null
run=$(kubectl -n "$NS" create -f examples/pipelinerun.yaml -o jsonpath='{.metadata.name}')
echo "--- PipelineRun $NS/$run created; waiting for Tekton to run it"

# succeeded prints the PipelineRun's Succeeded condition: True, False, or
# Unknown while it runs.
succeeded() {
  kubectl -n "$NS" get pipelinerun "$run" -o jsonpath='{.status.conditions[?(@.type=="Succeeded")].status}'
}
for ((i = 0; i < TIMEOUT; i++)); do
  [[ $(succeeded) == True || $(succeeded) == False ]] && break
  sleep 1
done
kubectl -n "$NS" get pipelinerun "$run"
if [[ $(succeeded) != True ]]; then
  kubectl -n "$NS" get pipelinerun "$run" -o yaml
  kubectl -n "$NS" get events --sort-by=.lastTimestamp
  exit 1
fi

# The TaskRuns are the PipelineRun's children, as Tekton lists them.
mapfile -t taskruns < <(kubectl -n "$NS" get pipelinerun "$run" \
  -o jsonpath='{range .status.childReferences[*]}{.name}{"\n"}{end}')
# Outputs are pushed once kubelet unmounts the finished pods' volumes, a
# moment after the TaskRuns completed: wait for the last one's report.
last=${taskruns[-1]}
for ((i = 0; i < 120; i++)); do
  [[ $(kubectl -n "$NS" get taskrun "$last" -o jsonpath='{.status.artifacts.outputs[*].name}') == *report* ]] && break
  sleep 1
done
for tr in "${taskruns[@]}"; do
  echo "--- the steps of TaskRun $tr printed:"
  pod=$(kubectl -n "$NS" get taskrun "$tr" -o jsonpath='{.status.podName}')
  for step in $(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[*].name}'); do
    kubectl -n "$NS" logs "$pod" -c "$step"
  done
done
echo "--- kubectl -n $NS get artifactrecords --field-selector spec.pipelineRun=$run"
kubectl -n "$NS" get artifactrecords --field-selector "spec.pipelineRun=$run"
for tr in "${taskruns[@]}"; do
  echo "--- TaskRun $tr status.artifacts"
  kubectl -n "$NS" get taskrun "$tr" -o jsonpath='{.status.artifacts}' | python3 -m json.tool
done
[[ $(kubectl -n "$NS" get taskrun "$last" -o jsonpath='{.status.artifacts.outputs[*].name}') == *report* ]] ||
  { echo "the report of $last was not recorded" >&2; exit 1; }
