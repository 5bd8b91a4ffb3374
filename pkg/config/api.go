package config

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ReadNamespace resolves the configuration of namespace from the API
// server, as the controller sees it: the cluster ConfigMap (cluster, in
// the driver's namespace) and the namespace's ConfigMap, if it carries
// LabelConfigType; no annotation level, since no pod is concerned. A
// missing ConfigMap is an empty level. The error of an invalid value
// (*KeyError) comes with the configuration, which keeps that key's value
// from the levels below; an error reading the API comes alone.
func ReadNamespace(ctx context.Context, r client.Reader, cluster client.ObjectKey, namespace string) (Config, error) {
	data := func(key client.ObjectKey, labelled bool) (map[string]string, error) {
		cm := &corev1.ConfigMap{}
		err := r.Get(ctx, key, cm)
		switch {
		case apierrors.IsNotFound(err):
			return nil, nil
		case err != nil:
			return nil, fmt.Errorf("get ConfigMap %s: %w", key, err)
		case labelled && cm.Labels[LabelConfigType] != ConfigTypeArtifactStorage:
			return nil, nil
		}
		return cm.Data, nil
	}
	clusterData, err := data(cluster, false)
	if err != nil {
		return Config{}, err
	}
	nsData, err := data(client.ObjectKey{Namespace: namespace, Name: ConfigMapName}, true)
	if err != nil {
		return Config{}, err
	}
	return Resolve(Layer{Level: LevelCluster, Data: clusterData}, Layer{Level: LevelNamespace, Data: nsData})
}
