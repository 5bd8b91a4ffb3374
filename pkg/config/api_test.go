package config

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func TestReadNamespace(t *testing.T) {
	cluster := client.ObjectKey{Namespace: "artifacts-csi", Name: ConfigMapName}
	cm := func(ns string, labelled bool, data map[string]string) *corev1.ConfigMap {
		c := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: ConfigMapName}, Data: data}
		if labelled {
			c.Labels = map[string]string{LabelConfigType: ConfigTypeArtifactStorage}
		}
		return c
	}
	boom := errors.New("connection refused")
	for _, tc := range []struct {
		name     string
		objs     []client.Object
		getErr   error
		wantRepo string
		wantErr  error
	}{
		{name: "nothing", wantRepo: ""},
		{name: "cluster only", objs: []client.Object{cm("artifacts-csi", false, map[string]string{KeyRepository: "r.example/c"})}, wantRepo: "r.example/c"},
		{name: "namespace wins", objs: []client.Object{cm("artifacts-csi", false, map[string]string{KeyRepository: "r.example/c"}),
			cm("team", true, map[string]string{KeyRepository: "r.example/team"})}, wantRepo: "r.example/team"},
		{name: "an unlabelled namespace ConfigMap is not configuration", objs: []client.Object{cm("artifacts-csi", false, map[string]string{KeyRepository: "r.example/c"}),
			cm("team", false, map[string]string{KeyRepository: "r.example/team"})}, wantRepo: "r.example/c"},
		{name: "the API fails", getErr: boom, wantErr: boom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithObjects(tc.objs...).WithInterceptorFuncs(interceptor.Funcs{
				Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
					if tc.getErr != nil {
						return tc.getErr
					}
					return c.Get(ctx, key, obj, opts...)
				},
			}).Build()
			got, err := ReadNamespace(context.Background(), c, cluster, "team")
			if !errors.Is(err, tc.wantErr) || err == nil && got.Repository != tc.wantRepo {
				t.Errorf("ReadNamespace = %q, %v; want %q, %v", got.Repository, err, tc.wantRepo, tc.wantErr)
			}
		})
	}
}
