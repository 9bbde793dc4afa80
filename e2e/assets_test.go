package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// assetsDir holds the operator assets (collector, Prometheus, alert rules, Grafana).
const assetsDir = "../deploy/observability"

// ruleExprs returns the expr of every rule in a Prometheus rules file.
func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Record, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Expr == "" || (r.Alert == "" && r.Record == "") {
				t.Errorf("%s: group %s has a rule without alert/record or expr", path, g.Name)
			}
			out = append(out, r.Expr)
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules", path)
	}
	return out
}

// dashboardExprs returns the expr of every target of every panel of a Grafana
// dashboard.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", path, p.Title)
		}
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	return out
}

// metricRef finds the metric names in a PromQL expression: ours (hodei_), the
// runtime's and the process's. Label names and values, functions and keywords do not
// start with those prefixes.
var metricRef = regexp.MustCompile(`\b(hodei_|go_|process_)[a-zA-Z0-9_]*`)

// Every metric the alert rules and the dashboard query is one the server exports:
// both files are parsed and their names compared with a real scrape of a server with
// a job running.
func TestObservabilityAssetsUseExportedMetrics(t *testing.T) {
	exprs := ruleExprs(t, filepath.Join(assetsDir, "alerts.yaml"))
	exprs = append(exprs, dashboardExprs(t, filepath.Join(assetsDir, "grafana", "dashboards", "hodei.json"))...)
	for _, f := range []string{"otel-collector.yaml", "prometheus.yaml", "compose.yaml"} {
		b, err := os.ReadFile(filepath.Join(assetsDir, f))
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	// promtool (make test installs it: scripts/ensure-promtool.sh) checks the rules.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (make ensure-promtool): %v", err)
	}
	if out, err := exec.Command(promtool, "check", "rules", filepath.Join(assetsDir, "alerts.yaml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(promtool, "check", "config", filepath.Join(assetsDir, "prometheus.yaml")).CombinedOutput(); err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}

	s := startServer(t, backendDev, 2)
	s.mustHodei("job", "run", "--", "true") // one ended job, one running
	id := s.submit("--", "sh", "-c", "sleep 30")
	waitJobState(t, s, id, "RUNNING", time.Minute)
	fams := scrape(t, s.url+"/metrics")
	s.mustHodei("job", "cancel", id)

	var names []string
	for _, e := range exprs {
		for _, n := range metricRef.FindAllString(e, -1) {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the assets: %v", len(names), names)
	}
	for _, n := range names {
		if _, ok := fams[n]; ok {
			continue
		}
		base := n
		for _, suf := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suf)
		}
		if f, ok := fams[base]; ok && f.GetType().String() == "HISTOGRAM" {
			continue
		}
		t.Errorf("the assets query %s, which the server does not export", n)
	}
	t.Logf("%d metric names in the alert rules and the dashboard checked against the scrape", len(names))
}
