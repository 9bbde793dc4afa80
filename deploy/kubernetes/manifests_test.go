package kubernetes_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/hodei-jobs/hodei/config"
	"github.com/hodei-jobs/hodei/internal/kubetest"
)

func TestMain(m *testing.M) { kubetest.Main(m) }

// objects decodes every document of every *.yaml file here.
func objects(t *testing.T) map[string][]*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string][]*unstructured.Unstructured{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(m) == 0 {
				continue
			}
			out[f] = append(out[f], &unstructured.Unstructured{Object: m})
		}
	}
	return out
}

// TestManifestsAcceptedByAPIServer applies every manifest to a real kube-apiserver with
// server-side apply: first with DryRun=All (validation, defaulting and admission, nothing
// stored), then for real, so that the RBAC objects can be checked below.
func TestManifestsAcceptedByAPIServer(t *testing.T) {
	c := kubetest.API(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	all := objects(t)
	apply := func(o *unstructured.Unstructured, dryRun bool) error {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			return err
		}
		opts := metav1.ApplyOptions{FieldManager: "hodei-manifests-test", Force: true}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		var r dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			r = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		_, err = r.Apply(ctx, o.GetName(), o, opts)
		return err
	}
	// Objects in a namespace are refused before it exists: the Namespaces are applied
	// for real first (a dry run of them stores nothing).
	for _, o := range all["namespaces.yaml"] {
		if err := apply(o, true); err != nil {
			t.Fatalf("dry-run %s %s: %v", o.GetKind(), o.GetName(), err)
		}
		if err := apply(o, false); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	kinds := map[string]bool{}
	for f, objs := range all {
		for _, o := range objs {
			kinds[o.GetKind()] = true
			if err := apply(o, true); err != nil {
				t.Errorf("%s: dry-run apply of %s %s/%s refused: %v", f, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			}
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "StatefulSet", "Secret", "Namespace"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
	// A dry run stores nothing.
	if _, err := c.Client.AppsV1().Deployments("hodei").Get(ctx, "hodei", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the dry run, Deployment hodei/hodei: %v, want NotFound", err)
	}
	for _, o := range all["rbac.yaml"] {
		if err := apply(o, false); err != nil {
			t.Fatalf("apply %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	// The ServiceAccount may do exactly what the provider needs: Pods and Secrets in
	// the jobs namespace, nothing else.
	sa := "system:serviceaccount:hodei:hodei"
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:hodei", "system:authenticated"}
	can := func(ns, group, resource, sub, verb string) bool {
		t.Helper()
		r, err := c.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authv1.SubjectAccessReview{
			Spec: authv1.SubjectAccessReviewSpec{User: sa, Groups: groups, ResourceAttributes: &authv1.ResourceAttributes{
				Namespace: ns, Group: group, Resource: resource, Subresource: sub, Verb: verb}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status.Allowed
	}
	for _, res := range []string{"pods", "secrets"} {
		for _, verb := range []string{"create", "get", "list", "delete"} {
			if !can("hodei-jobs", "", res, "", verb) {
				t.Errorf("the Role should allow %s %s in hodei-jobs", verb, res)
			}
		}
	}
	if !can("hodei-jobs", "", "pods", "", "watch") {
		t.Errorf("the Role should allow watch pods in hodei-jobs (the provider's informer)")
	}
	denied := []struct{ ns, group, res, sub, verb string }{
		{"hodei-jobs", "", "configmaps", "", "get"},
		{"hodei-jobs", "", "services", "", "create"},
		{"hodei-jobs", "apps", "deployments", "", "create"},
		{"hodei-jobs", "", "pods", "exec", "create"},
		{"hodei-jobs", "", "pods", "", "update"},
		{"hodei-jobs", "rbac.authorization.k8s.io", "roles", "", "create"},
		{"default", "", "pods", "", "create"},
		{"hodei", "", "secrets", "", "get"},
		{"", "", "nodes", "", "list"},
		{"", "", "namespaces", "", "create"},
	}
	for _, d := range denied {
		if can(d.ns, d.group, d.res, d.sub, d.verb) {
			t.Errorf("the ServiceAccount may %s %s/%s%s in %q; it should not", d.verb, d.group, d.res, d.sub, d.ns)
		}
	}
}

// TestConfigMapIsAValidSettingsFile loads the ConfigMap's hodei.yaml with the server's
// config package (unknown keys and bad values are refused there).
func TestConfigMapIsAValidSettingsFile(t *testing.T) {
	var cm *unstructured.Unstructured
	for _, o := range objects(t)["config.yaml"] {
		if o.GetKind() == "ConfigMap" {
			cm = o
		}
	}
	if cm == nil {
		t.Fatal("config.yaml has no ConfigMap")
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "hodei.yaml")
	if !strings.Contains(data, "listen:") {
		t.Fatalf("hodei.yaml missing or empty: %q", data)
	}
	l, err := config.Parse("hodei.yaml", []byte(data))
	if err != nil {
		t.Fatalf("hodei.yaml: %v", err)
	}
	keys := map[string]bool{}
	for _, s := range l.Settings() {
		keys[s.Key] = true
	}
	for _, k := range []string{"listen", "auth", "tls_cert", "tls_key", "nats_url"} {
		if !keys[k] {
			t.Errorf("hodei.yaml does not set %s (settings: %v)", k, l.Settings())
		}
	}
}
