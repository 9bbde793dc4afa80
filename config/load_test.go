package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const example = `# hodei.yaml
listen: 127.0.0.1:7171
providers: [local, docker]
heartbeat_interval: 2s
auth: true
secrets_old_key_file:
  - /etc/hodei/old1.key
local:
  max_workers: 3
docker:
  host: unix:///run/docker.sock
  max_workers: 5
  labels:
    zone: b
    gpu: "true"
`

func TestParseExample(t *testing.T) {
	l, err := Parse("hodei.yaml", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	f := l.File
	if f.Listen != "127.0.0.1:7171" || !slices.Equal(f.Providers, []string{"local", "docker"}) ||
		f.HeartbeatInterval != 2*time.Second || !f.Auth || f.Local.MaxWorkers != 3 ||
		f.Docker.Host != "unix:///run/docker.sock" || f.Docker.MaxWorkers != 5 ||
		!reflect.DeepEqual(f.Docker.Labels, map[string]string{"zone": "b", "gpu": "true"}) ||
		!slices.Equal(f.SecretsOldKeyFile, []string{"/etc/hodei/old1.key"}) {
		t.Errorf("decoded %+v", f)
	}
	want := []Setting{
		{Key: "listen", Flag: "listen", Pos: "hodei.yaml:2", Value: "127.0.0.1:7171"},
		{Key: "providers", Flag: "provider", Pos: "hodei.yaml:3", IsList: true, List: []string{"local", "docker"}},
		{Key: "heartbeat_interval", Flag: "heartbeat-interval", Pos: "hodei.yaml:4", Value: "2s"},
		{Key: "auth", Flag: "auth", Pos: "hodei.yaml:5", Value: "true"},
		{Key: "secrets_old_key_file", Flag: "secrets-old-key-file", Pos: "hodei.yaml:7", IsList: true, List: []string{"/etc/hodei/old1.key"}},
		{Key: "local.max_workers", Flag: "local-max-workers", Pos: "hodei.yaml:9", Value: "3"},
		{Key: "docker.host", Flag: "docker-host", Pos: "hodei.yaml:11", Value: "unix:///run/docker.sock"},
		{Key: "docker.max_workers", Flag: "docker-max-workers", Pos: "hodei.yaml:12", Value: "5"},
		{Key: "docker.labels", Flag: "docker-labels", Pos: "hodei.yaml:14", IsList: true, List: []string{"gpu=true", "zone=b"}},
	}
	if got := l.Settings(); !reflect.DeepEqual(got, want) {
		t.Errorf("settings\n got %+v\nwant %+v", got, want)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, s := range []string{"", "# nothing yet\n", "---\n"} {
		l, err := Parse("h.yaml", []byte(s))
		if err != nil || len(l.Settings()) != 0 || !reflect.DeepEqual(l.File, File{}) {
			t.Errorf("%q: %v %+v", s, err, l)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"listen: a\nlistn: b\n", `h.yaml:2: unknown key listn (top-level keys: `},
		{"docker:\n  hots: x\n", `h.yaml:2: unknown key docker.hots (docker keys: agent, default_image, host, labels, max_workers, network)`},
		{"docker:\n  max_workers: many\n", `h.yaml:2: docker.max_workers: want an integer, got "many"`},
		{"heartbeat_interval: 5\n", `h.yaml:1: heartbeat_interval: want a duration such as 30s or 5m, got "5"`},
		{"auth: maybe\n", `h.yaml:1: auth: want true or false, got "maybe"`},
		{"providers: docker\n", `h.yaml:1: providers: want a list of strings`},
		{"docker:\n  labels: [a, b]\n", `h.yaml:2: docker.labels: want a mapping of strings`},
		{"docker:\n  labels:\n    gpu: [x]\n", `h.yaml:3: docker.labels.gpu: want a string`},
		{"docker: unix:///x\n", `h.yaml:1: docker: want a mapping (the docker section)`},
		{"listen:\n", `h.yaml:1: listen: no value`},
		{"listen: a\nlisten: b\n", `h.yaml:2: listen: given twice (first at line 1)`},
		{"listen: a\n---\nlisten: b\n", `h.yaml:2: want one YAML document`},
		{"- listen\n", `h.yaml:1: want a mapping of settings`},
		{"listen: [a\n", `h.yaml: yaml:`},
	} {
		_, err := Parse("h.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.yaml, err, c.want)
		}
	}
}

func TestKeysAndFlags(t *testing.T) {
	for flag, key := range map[string]string{
		"listen": "listen", "provider": "providers", "docker-max-workers": "docker.max_workers",
		"local-max-workers": "local.max_workers", "max-workers": "max_workers",
		"tls-client-ca": "tls_client_ca", "docker-default-image": "docker.default_image",
	} {
		if got := KeyForFlag(flag); got != key {
			t.Errorf("KeyForFlag(%s) = %s, want %s", flag, got, key)
		}
		if got := FlagForKey(key); got != flag {
			t.Errorf("FlagForKey(%s) = %s, want %s", key, got, flag)
		}
	}
}

// A later section with file-only maps and lists of records (a provider's tolerations,
// warm pools) is checked as deeply as the rest: the shape sections will take.
func TestFileOnlyFieldsAreChecked(t *testing.T) {
	type toleration struct {
		Key    string `yaml:"key"`
		Effect string `yaml:"effect"`
	}
	type pool struct {
		Provider string        `yaml:"provider"`
		MinIdle  int           `yaml:"min_idle"`
		IdleTTL  time.Duration `yaml:"idle_ttl"`
	}
	type kube struct {
		Namespace    string            `yaml:"namespace"`
		NodeSelector map[string]string `yaml:"node_selector" config:"file-only"`
		Tolerations  []toleration      `yaml:"tolerations" config:"file-only"`
	}
	type schema struct {
		Kubernetes kube   `yaml:"kubernetes"`
		WarmPools  []pool `yaml:"warm_pools" config:"file-only"`
	}
	parse := func(src string) (*Loaded, error) {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
			t.Fatal(err)
		}
		l := &Loaded{Path: "k.yaml"}
		return l, l.checkMapping(doc.Content[0], reflect.TypeFor[schema](), "", true)
	}
	l, err := parse("kubernetes:\n  namespace: jobs\n  node_selector: {disk: ssd}\n  tolerations:\n    - {key: gpu, effect: NoSchedule}\nwarm_pools:\n  - {provider: docker, min_idle: 2, idle_ttl: 5m}\n")
	if err != nil {
		t.Fatal(err)
	}
	if s := l.Settings(); len(s) != 1 || s[0].Key != "kubernetes.namespace" || s[0].Flag != "kubernetes-namespace" {
		t.Errorf("only namespace has a flag: %+v", s)
	}
	for src, want := range map[string]string{
		"warm_pools:\n  - {provider: docker, min_idle: two}\n":      `k.yaml:2: warm_pools[0].min_idle: want an integer, got "two"`,
		"warm_pools:\n  - provider: docker\n    max_idel: 3\n":      `k.yaml:3: unknown key warm_pools[0].max_idel (warm_pools[0] keys: idle_ttl, min_idle, provider)`,
		"kubernetes:\n  tolerations:\n    - {key: gpu, efect: x}\n": `k.yaml:3: unknown key kubernetes.tolerations[0].efect`,
	} {
		if _, err := parse(src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", src, err, want)
		}
	}
}

func TestParsePools(t *testing.T) {
	l, err := Parse("h.yaml", []byte("warm_workers: 2\npools:\n  - name: ci\n    provider: docker\n    image: busybox\n    cpu: \"0.5\"\n    min_idle: 1\n    max_idle: 4\n    idle_ttl: 90s\n    max_jobs_per_worker: 20\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Pool{{Name: "ci", Provider: "docker", Image: "busybox", CPU: "0.5", MinIdle: 1, MaxIdle: 4, IdleTTL: 90 * time.Second, MaxJobsPerWorker: 20}}
	if !reflect.DeepEqual(l.File.Pools, want) || l.File.WarmWorkers != 2 {
		t.Fatalf("decoded %+v", l.File)
	}
	if _, err := Parse("h.yaml", []byte("pools:\n  - idle_ttl: 5\n")); err == nil || !strings.Contains(err.Error(), "h.yaml:2: pools[0].idle_ttl: want a duration") {
		t.Fatalf("bad idle_ttl: %v", err)
	}
}
